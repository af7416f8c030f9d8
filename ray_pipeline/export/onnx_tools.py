"""ONNX export, parity check, INT8 quantization, pruning and latency measurement (pure: no Ray).

Facts this relies on (checked on this machine, see docs): the dynamo exporter needs onnxscript and must not
see a dynamic dimension of size 1 at export time; its files need `quant_pre_process` before ORT
quantization; for models this small, INT8 buys size more often than speed: both are measured and reported,
and which file is deployed does not depend on the timing (export.stage.choose_files).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import atomic
from ..features import FEATURE_VERSION
from ..inference import ort_session
from ..kinds import Kind


class ExportError(RuntimeError):
    pass


def export_onnx(model: torch.nn.Module, kind: Kind, path: Path, meta: dict[str, str]) -> Path:
    """Export with the kind's dynamic axes (a set input: batch and candidate count) and embed metadata.
    Writes `path` directly: callers pass a temporary name and rename it after the parity check."""
    import onnx

    model = model.eval()
    inputs, outputs = kind.onnx_names()
    prog = torch.onnx.export(model, kind.example_inputs(), dynamo=True, verbose=False,
                             dynamic_shapes=kind.onnx_dynamic_shapes(), input_names=inputs, output_names=outputs)
    prog.save(str(path))
    m = onnx.load(str(path))
    for k, v in dict(meta, feature_version=FEATURE_VERSION).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def save_native_mlp(model: torch.nn.Module, kind: Kind, path: Path, meta: dict[str, str] | None = None) -> Path:
    """The model as the solver core's native MLP file (solver.policy): Normalize, then Linear/ReLU layers, and
    `meta` strings (as export_onnx's metadata). Refuses any other layer: the core evaluates exactly this."""
    from ..models.nets import Normalize
    from ..solver.policy import save_mlp

    norm, net = getattr(model, "norm", None), getattr(model, "net", None)
    if not isinstance(norm, Normalize) or not isinstance(net, torch.nn.Sequential):
        raise ExportError(f"{kind.name}: not a Normalize + Sequential MLP; the core cannot run it natively")
    layers: list[list] = []
    for m in net:
        if isinstance(m, torch.nn.Linear):
            layers.append([m.weight.detach().numpy(), m.bias.detach().numpy(), False])
        elif isinstance(m, torch.nn.ReLU) and layers and not layers[-1][2]:
            layers[-1][2] = True
        elif not isinstance(m, torch.nn.Dropout):  # dropout is the identity at inference
            raise ExportError(f"{kind.name}: layer {m!r} has no native counterpart")
    save_mlp(path, kind=kind.name, mean=norm.mean.numpy(), std=norm.std.numpy(), clip=Normalize.CLIP,
             layers=[tuple(x) for x in layers], meta=meta)
    return path


def run_onnx(path: Path, *inputs: np.ndarray, threads: int = 1) -> np.ndarray:
    s = ort_session(path, threads)
    names = [i.name for i in s.get_inputs()]
    return s.run(None, dict(zip(names, inputs)))[0]


def parity(model: torch.nn.Module, path: Path, inputs: list[np.ndarray], atol: float, rtol: float = 1e-4
           ) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on real rows, at batch 1 and at full batch."""
    with torch.inference_mode():
        ref = model(*[torch.from_numpy(a) for a in inputs]).numpy()
    got = run_onnx(path, *inputs)
    one = run_onnx(path, *[a[:1] for a in inputs])
    ref_one = ref[:1]
    if inputs and inputs[-1].dtype == bool:  # teacher: padded candidates do not count
        m = inputs[-1]
        diff = np.abs(got - ref)[m]
        diff_one = np.abs(one - ref_one)[m[:1]]
    else:
        diff, diff_one = np.abs(got - ref), np.abs(one - ref_one)
    max_abs = float(max(diff.max(initial=0.0), diff_one.max(initial=0.0)))
    ok = bool(np.allclose(got, ref, atol=atol, rtol=rtol) and np.allclose(one, ref_one, atol=atol, rtol=rtol))
    return {"rows": int(len(inputs[0])), "max_abs_diff": max_abs, "atol": atol, "rtol": rtol, "passed": ok}


class _Calibration:
    """CalibrationDataReader over real dataset rows, in small batches."""

    def __init__(self, name: str, rows: np.ndarray, batch: int = 32):
        self.items = [{name: rows[i: i + batch]} for i in range(0, len(rows), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.items):
            return None
        self.i += 1
        return self.items[self.i - 1]

    def rewind(self):
        self.i = 0


def quantize(fp32: Path, out_dir: Path, calibration_rows: np.ndarray | None, do_dynamic: bool, do_static: bool
             ) -> dict[str, Path]:
    """INT8 variants: dynamic (weights int8, activations quantised on the fly) and static QDQ S8S8
    calibrated on dataset rows. The dynamo export is pre-processed first (shape inference)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_dynamic, quantize_static)

    pre = out_dir / "model.pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    out: dict[str, Path] = {}
    try:
        if do_dynamic:
            p = out_dir / "model.int8-dynamic.onnx"
            quantize_dynamic(str(pre), str(p), weight_type=QuantType.QInt8)
            out["int8-dynamic"] = p
        if do_static and calibration_rows is not None and len(calibration_rows) >= 8:
            p = out_dir / "model.int8-static.onnx"
            name = ort_session(fp32).get_inputs()[0].name

            class Reader(_Calibration, CalibrationDataReader):
                pass

            quantize_static(str(pre), str(p), Reader(name, calibration_rows), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, extra_options={"ActivationSymmetric": False,
                                                                                      "WeightSymmetric": True})
            out["int8-static"] = p
    finally:
        pre.unlink(missing_ok=True)
    return out


def latency(fn: Callable[[], Any], calls: int) -> float:
    """Mean microseconds per call after a warm-up."""
    for _ in range(min(50, calls)):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def measure(variant: str, fn_single: Callable[[], Any], fn_batch: Callable[[], Any], batch_rows: int, calls: int,
            size_bytes: int | None) -> dict[str, Any]:
    single = latency(fn_single, calls)
    batch = latency(fn_batch, max(10, calls // 10))
    return {"variant": variant, "size_bytes": size_bytes, "latency_single_us": round(single, 2),
            "latency_batch_us": round(batch, 2), "batch_rows": batch_rows,
            "throughput_rows_per_s": round(batch_rows / (batch / 1e6), 1)}


def prune_copy(model: torch.nn.Module, amount: float) -> tuple[torch.nn.Module, dict[str, int]]:
    """Global L1 magnitude pruning of the Linear weights, made permanent (prune.remove) on a copy."""
    import copy

    from torch.nn.utils import prune

    m = copy.deepcopy(model)
    params = [(mod, "weight") for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for mod, name in params:
        prune.remove(mod, name)
    total = sum(int(mod.weight.numel()) for mod, _ in params)
    nonzero = sum(int((mod.weight != 0).sum()) for mod, _ in params)
    return m.eval(), {"linear_weights": total, "nonzero": nonzero}


def write_meta(path: Path, obj: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
