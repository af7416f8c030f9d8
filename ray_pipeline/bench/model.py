"""`ray-pipeline bench model [CONFIG]`: the exported student's cost per decision, side by side in one process:
PyTorch eager, ONNX Runtime FP32, ONNX Runtime INT8 (dynamic and static); one call scores one decision's
candidates (top_k rows), a batch call scores 256 rows. Needs the run's export stage."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..config import load_config
from ..kinds import deployed


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import dataset as ds_lib
    from ..export import onnx_tools as ot
    from ..models import io as model_io
    from ..paths import RunPaths

    cfg = load_config(args.config, list(args.overrides))
    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    mdir = paths.model(deployed().name)
    if not (mdir / "model.onnx").exists():
        print(f"error: {mdir / 'model.onnx'} missing: run `ray-pipeline export {args.config}` first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    model, _ = model_io.load(mdir)
    a = ds_lib.to_arrays(ds_lib.read_states(paths.dataset, "test"), ds_lib.read_manifest(paths.dataset)["top_k"])
    flat = a["x"][a["mask"]]
    single = np.ascontiguousarray(flat[:8])
    batch = np.ascontiguousarray(np.tile(flat, (int(np.ceil(256 / len(flat))), 1))[:256])
    rows = []

    def torch_run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    rows.append(ot.measure("pytorch", lambda: torch_run(single), lambda: torch_run(batch), 256, 5000, None))
    for name in ("model.onnx", "model.int8-dynamic.onnx", "model.int8-static.onnx"):
        p = mdir / name
        if p.exists():
            s = ot.ort_session(p)
            inp = s.get_inputs()[0].name
            rows.append(ot.measure(name, lambda s=s, inp=inp: s.run(None, {inp: single}),
                                   lambda s=s, inp=inp: s.run(None, {inp: batch}), 256, 5000, p.stat().st_size))
    base = rows[0]["latency_single_us"]
    for r in rows:
        r["speedup_vs_pytorch_single"] = round(base / r["latency_single_us"], 2)
    print(json.dumps({"benchmark": "model", "run": str(paths.run), "rows_per_decision": 8, "results": rows},
                     indent=1))
    return 0
