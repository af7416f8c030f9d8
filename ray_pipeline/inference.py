"""Load a trained scorer for the solver's learned heuristic: an exported ONNX file (deployment) or a
`model.pt` state dict (development). Both take raw features [k, N_INPUT] and return k scores.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .features import FEATURE_VERSION, INPUT_FEATURES, N_INPUT


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the reason."""


def ort_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # tiny model, many processes: one thread avoids oversubscription
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxScorer:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError / ValueError / google.protobuf errors
            raise ModelError(f"{path}: not an ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("feature_version") not in (None, FEATURE_VERSION):
            raise ModelError(f"{path}: built for features {meta['feature_version']!r}, this solver has "
                             f"{FEATURE_VERSION!r}; re-export the model")
        if "features" in meta and tuple(json.loads(meta["features"])) != INPUT_FEATURES:
            raise ModelError(f"{path}: feature names differ from this solver's; re-export the model")
        try:
            self.session = ort_session(path)
        except Exception as e:
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (N_INPUT, None) and not isinstance(inputs[0].shape[-1], str):
            raise ModelError(f"{path}: expected one input [batch, {N_INPUT}], got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        self.path = path
        self.meta = meta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out.reshape(-1)


def load_scorer(path: str | Path):
    path = Path(path)
    if path.suffix == ".pt":
        from .models.io import load_scorer_pt

        return load_scorer_pt(path)
    return OnnxScorer(path)
