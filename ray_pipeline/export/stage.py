"""The `export` stage: one Ray task per model -- ONNX export + parity check, INT8 (dynamic and static),
magnitude pruning, latency/throughput/size table -- then model cards and the registry.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import atomic, learned_setting
from ..kinds import ALL_KINDS, KINDS, OPTIONAL_KINDS, deployed
from ..learned_setting import KEY
from ..pipeline import StageContext, StageResult

log = logging.getLogger(__name__)


def _rows(dataset_dir: Path, kind: str, k_max: int, split: str = "test") -> dict[str, np.ndarray]:
    from ..data import dataset as ds_lib

    if not KINDS[kind].scorer:
        return ds_lib.cost_rows(dataset_dir, ["test", "val"])
    a = ds_lib.to_arrays(ds_lib.read_states(dataset_dir, split), k_max)
    return a


def _ranking(scores: np.ndarray, a: dict[str, np.ndarray]) -> dict[str, float]:
    import torch

    from ..train.metrics import finish_ranking, ranking_sums

    return finish_ranking(ranking_sums(torch.from_numpy(scores), torch.from_numpy(a["mask"]),
                                       torch.from_numpy(a["target"])))


def export_one(kind: str, model_files: dict[str, bytes], data: dict[str, np.ndarray], k_max: int,
               opts: dict[str, Any], setting: Optional[str] = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Runs as a Ray task (one per model), on any node: the model files and the dataset rows arrive as
    values, the ONNX files (and model.json) go back as bytes for the driver to write. Everything measured
    runs in this one process. Raises (and returns no file) when ONNX Runtime disagrees with PyTorch.
    `setting`: the learned heuristic's evaluated setting (learned_setting, as text) to store in every file of
    this model, or None for a model the evaluate stage does not run as the learned heuristic."""
    from ..storage import unpacked

    with unpacked(model_files, f"export-{kind}") as mdir:
        out = _export_in(kind, mdir, data, k_max, opts, setting)
        files = sorted(mdir.glob("model*.onnx")) + sorted(mdir.glob("model.native.npz")) + [mdir / "model.json"]
        return out, {p.name: p.read_bytes() for p in files}


def _export_in(kind: str, mdir: Path, data: dict[str, np.ndarray], k_max: int, opts: dict[str, Any],
               setting: Optional[str] = None) -> dict[str, Any]:
    import torch

    from ..models import io as model_io
    from . import onnx_tools as ot

    torch.set_num_threads(1)
    model, spec = model_io.load(mdir)
    kd = KINDS[kind]
    stored = {KEY: setting} if setting is not None else {}  # in the ONNX metadata and the native file
    # model.json too: set, or removed when an earlier export stored one and this model is no longer evaluated
    spec = {k: v for k, v in spec.items() if k != KEY}
    atomic.write_json(mdir / "model.json", {**spec, **({KEY: json.loads(setting)} if setting is not None else {})})
    meta = {"kind": kind, "features": json.dumps(spec["features"]), "train_key": spec["train_key"],
            "dataset_hash": spec["dataset_hash"], **stored}
    fp32 = mdir / "model.onnx"
    partial = mdir / ".model.onnx.partial"  # renamed to model.onnx only once it matches PyTorch
    ot.export_onnx(model, kd, partial, meta)
    out: dict[str, Any] = {"kind": kind, "params": sum(p.numel() for p in model.parameters())}

    # ---- inputs on real rows, and how each variant is scored
    if kd.scorer and not kd.set_input:  # candidate rows, scored independently
        flat = data["x"][data["mask"]]
        parity_inputs = [flat[: opts["parity_rows"]]]

        def score_fn(run):  # run(flat rows) -> flat scores, re-padded for the ranking metrics
            s = np.full(data["mask"].shape, -np.inf, dtype=np.float32)
            s[data["mask"]] = run(flat)
            return _ranking(s, data)
    elif kd.set_input:  # whole candidate sets with their masks
        parity_inputs = [data["x"][: max(2, opts["parity_rows"] // k_max)], data["mask"][: max(2, opts["parity_rows"] // k_max)]]
        flat = None

        def score_fn(run):
            return _ranking(run(data["x"], data["mask"]), data)
    else:  # a regressor of instance features
        flat = data["x"]
        parity_inputs = [flat[: opts["parity_rows"]]]

        def score_fn(run):
            pred = run(flat)
            ok = np.isfinite(data["y"])
            return {"rmse_log_nodes": float(np.sqrt(np.mean((pred[:, 0] - data["y"][:, 0]) ** 2))),
                    "rmse_log_time": float(np.sqrt(np.mean((pred[ok[:, 1], 1] - data["y"][ok[:, 1], 1]) ** 2)))
                    if ok[:, 1].any() else None}
    out["parity"] = ot.parity(model, partial, parity_inputs, atol=opts["parity_atol"])
    if not out["parity"]["passed"]:
        partial.unlink(missing_ok=True)
        raise ot.ExportError(f"{kind}/model.onnx: ONNX Runtime differs from PyTorch by "
                             f"{out['parity']['max_abs_diff']:.3g} (> atol {opts['parity_atol']}) on "
                             f"{out['parity']['rows']} dataset rows; the previous model.onnx is left as it was")
    os.replace(partial, fp32)

    def torch_run(*arrs):
        with torch.inference_mode():
            return model(*[torch.from_numpy(a) for a in arrs]).numpy()

    def ort_runner(path):
        s = ot.ort_session(path)
        names = [i.name for i in s.get_inputs()]
        return lambda *arrs: s.run(None, dict(zip(names, arrs)))[0]

    variants: dict[str, Any] = {"pytorch": (torch_run, None), "onnx-fp32": (ort_runner(fp32), fp32)}
    if kd.native:  # the core's own evaluation of the MLP, held to ONNX Runtime FP32 on every test row
        native = _export_native(model, kd, mdir, flat, variants["onnx-fp32"][0], opts["native_atol"], stored)
        out["native_parity"] = native["parity"]
        if native["runner"] is not None:
            variants["native"] = (native["runner"], native["path"])
    if kd.quantize:
        q = ot.quantize(fp32, mdir, flat[: opts["calibration_rows"]], opts["quantize_dynamic"],
                        opts["quantize_static"])
        for name, p in q.items():
            variants[f"onnx-{name}"] = (ort_runner(p), p)

    # ---- accuracy, latency, size of every variant (single call = one decision's candidates)
    if kd.set_input:
        single_in = [data["x"][:1], data["mask"][:1]]
        batch_in = [data["x"][:32], data["mask"][:32]]
    else:
        single_in = [flat[:k_max]]
        reps = int(np.ceil(256 / max(1, len(flat))))
        batch_in = [np.ascontiguousarray(np.tile(flat, (reps, 1))[:256])]
    table = []
    for name, (run, path) in variants.items():
        row = ot.measure(name, lambda: run(*single_in), lambda: run(*batch_in), len(batch_in[0]),
                         opts["latency_calls"], path.stat().st_size if path else None)
        row.update(score_fn(run))
        table.append(row)
    out["variants"] = table

    if kd.scorer and kd.quantize:  # a scorer the solver can deploy
        out.update(choose_files(table, opts["int8_max_top1_drop"]))
        if out["int8_choice"]:
            with atomic.file(mdir / "model.int8.onnx") as tmp:
                shutil.copyfile(variants[out["int8_choice"]][1], tmp)
        # ---- pruning: the accuracy cost of zeroing small weights (shapes stay: no speedup on dense kernels)
        prune_rows = []
        for amount in opts["prune_amounts"]:
            pm, counts = ot.prune_copy(model, amount)
            with torch.inference_mode():
                s = np.full(data["mask"].shape, -np.inf, dtype=np.float32)
                s[data["mask"]] = pm(torch.from_numpy(flat)).numpy()
            prune_rows.append({"amount": amount, **counts, **_ranking(s, data)})
        out["pruning"] = prune_rows
    elif kd.quantize:
        int8 = [r for r in table if r["variant"].startswith("onnx-int8")]
        if int8:
            best = min(int8, key=lambda r: r["rmse_log_nodes"])
            with atomic.file(mdir / "model.int8.onnx") as tmp:
                shutil.copyfile(variants[best["variant"]][1], tmp)
            out["int8_choice"] = best["variant"]
    return out


# INT8 variants in order of preference at equal top-1: static (QDQ) was the faster of the two at this model size
# (README, "Deployed student"); a fixed order, so that a tie never goes to whichever was timed faster on the day
INT8_ORDER = ("onnx-int8-static", "onnx-int8-dynamic")


def choose_files(table: list[dict[str, Any]], int8_max_top1_drop: float) -> dict[str, Any]:
    """Which file to deploy and which INT8 variant to keep as model.int8.onnx, from the export's variant table
    (one row per variant that passed its checks: its top-1 on the test rows, its latency, ...).

    A pure function of the table's accuracy columns, never of its latency: latency is measured on whatever
    machine runs the export while others share it, and the former rule (INT8 when 5% faster at equal top-1)
    deployed FP32 on one fresh clone and INT8 on another from the same model bytes. Nor does latency argue for
    INT8 here: at this model size INT8 buys size, not speed (README: 11 us per decision FP32, 15-24 us INT8).
    So the preference is fixed: the native MLP (in the table only when it matched ONNX Runtime FP32: an FP32
    evaluation inside the solver core), else FP32 ONNX. INT8 is exported and measured for the table, and
    `evaluate.learned.runtime: onnx-int8` evaluates it, but it is never deployed by this rule.
    INT8 file: the most accurate variant, ties in INT8_ORDER; `int8_within_tolerance` says whether it stays
    within `int8_max_top1_drop` of FP32's top-1."""
    by_name = {r["variant"]: r for r in table}
    base = by_name["onnx-fp32"]
    int8 = [by_name[v] for v in INT8_ORDER if v in by_name]
    best = max(int8, key=lambda r: r["top1"], default=None)  # max keeps the first of equals: INT8_ORDER decides
    return {"int8_choice": best["variant"] if best else None,
            "int8_within_tolerance": bool(best and base["top1"] - best["top1"] <= int8_max_top1_drop),
            "deploy": "model.native.npz" if "native" in by_name else "model.onnx"}


def _export_native(model, kd, mdir: Path, rows: np.ndarray, onnx_fp32, atol: float, meta: dict[str, str]
                   ) -> dict[str, Any]:
    """Write model.native.npz and compare the core's evaluation with ONNX Runtime FP32 on `rows`; over `atol`
    the file is removed (it is never deployed) and the parity row says why."""
    from ..solver.policy import NativeMlp
    from . import onnx_tools as ot

    path = mdir / "model.native.npz"
    partial = mdir / ".model.native.npz.partial"
    ot.save_native_mlp(model, kd, partial, meta)
    mlp = NativeMlp(partial)
    diff = np.abs(mlp(rows) - onnx_fp32(rows).astype(np.float64))
    parity = {"rows": int(len(rows)), "max_abs_diff": float(diff.max(initial=0.0)), "atol": atol,
              "passed": bool(diff.max(initial=0.0) <= atol)}
    if not parity["passed"]:
        partial.unlink(missing_ok=True)
        log.warning("%s/model.native.npz: the native MLP differs from ONNX Runtime by %.3g (> %g) on %d rows; "
                    "not written, not deployed", kd.name, parity["max_abs_diff"], atol, parity["rows"])
        return {"parity": parity, "runner": None, "path": None}
    os.replace(partial, path)
    return {"parity": parity, "runner": mlp, "path": path}  # the file's bytes, renamed: the same model


def run(ctx: StageContext) -> StageResult:
    import ray

    from ..data import dataset as ds_lib
    from ..models import io as model_io
    from ..registry import Registry
    from ..storage import pack
    from . import cards

    cfg, paths = ctx.cfg, ctx.paths
    manifest = ds_lib.read_manifest(paths.dataset)
    opts = cfg.export.model_dump(mode="json")
    # the setting the evaluate stage runs the learned heuristic with goes into the files of the model it runs
    setting = learned_setting.from_config(cfg).to_text()
    task = ray.remote(num_cpus=1)(export_one)
    refs = {}
    for k in KINDS:
        model_io.load(paths.model(k))  # a damaged model fails here, naming its file, before any task starts
        refs[k] = task.remote(k, pack(paths.model(k), ("model.pt", "model.json")),
                              _rows(paths.dataset, k, manifest["top_k"]), manifest["top_k"], opts,
                              setting if k == cfg.evaluate.learned.model else None)
    done = {k: ray.get(r) for k, r in refs.items()}  # every task finished: only now is any file replaced
    results = {}
    for k, (r, files) in done.items():
        for name, data in files.items():
            atomic.write_bytes(paths.model(k) / name, data)
        if "model.native.npz" not in files:  # never leave an earlier run's native file beside this run's ONNX
            (paths.model(k) / "model.native.npz").unlink(missing_ok=True)
        results[k] = dict(r, onnx=str(paths.model(k) / "model.onnx"))
    registry = Registry.open(paths.run.parent)
    train_summary = json.loads((paths.models / "train_summary.json").read_text())
    for k, r in results.items():
        spec = json.loads((paths.model(k) / "model.json").read_text())
        card = cards.model_card(k, spec, r, train_summary, cfg)
        atomic.write_text(paths.model(k) / "card.md", card)
        registry.add_model(run=cfg.run.name, name=k, kind=k, path=str(paths.model(k)), spec=spec, export=r,
                           config_hash=ctx.manifest.data["config_hash"])
    if cfg.evaluate.learned.model in OPTIONAL_KINDS:  # no ONNX export: the train stage's files take the setting
        _store_setting(paths.model(cfg.evaluate.learned.model), setting)
    atomic.write_json(paths.models / "export_summary.json", results)
    d = deployed().name
    s = results[d]
    log.info("export: %s parity max|diff| %.2g; deploy %s; %s", d, s["parity"]["max_abs_diff"], s["deploy"],
             {r["variant"]: (r["latency_single_us"], round(r["top1"], 3)) for r in s["variants"]})
    return StageResult(outputs={d: {k: s[k] for k in ("onnx", "deploy", "int8_choice", "parity")},
                                "summary": str(paths.models / "export_summary.json")}, output_hash=output_hash(paths))


def _store_setting(mdir: Path, setting: str) -> None:
    """The evaluated setting into an optional kind's model.json and native file (when the train stage wrote one),
    each replaced whole: the same setting gives the same bytes."""
    from ..solver.policy import with_meta

    native = mdir / "model.native.npz"
    if native.is_file():
        atomic.write_bytes(native, with_meta(native, {KEY: setting}))
    spec = json.loads((mdir / "model.json").read_text())
    atomic.write_json(mdir / "model.json", {**spec, KEY: json.loads(setting)})


def output_hash(paths) -> str:
    # ALL_KINDS: an optional kind's native file carries the setting when it is the one evaluated (_store_setting)
    return atomic.hash_files({f"{k}/{name}": paths.model(k) / name for k in ALL_KINDS
                              for name in ("model.onnx", "model.int8.onnx", "model.native.npz")})
