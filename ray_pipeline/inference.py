"""Load a trained scorer for the solver's learned heuristic: an exported native MLP (`model.native.npz`, scored
inside the solver core) or ONNX file (deployment), or a `model.pt` state dict (development), of the student or the teacher. Every scorer takes the raw features of one
state's k candidates [k, N_INPUT] and returns k scores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ModelError
from .features import FEATURE_VERSION, INPUT_FEATURES, N_INPUT
from .kinds import kind_of

__all__ = ["ModelError", "OnnxScorer", "load_scorer", "load_for_search", "ort_session"]


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
        if "kind" not in meta:
            raise ModelError(f"{path}: no model kind in its metadata: not exported by ray_pipeline")
        kind = kind_of(meta["kind"], str(path))
        if not kind.scorer:
            raise ModelError(f"{path}: a {kind.name} model is not a variable scorer")
        # the kind says how it takes one state's candidates: rows [k, N_INPUT], or a set [1, k, N_INPUT] + mask
        self.is_set = kind.set_input
        inputs = self.session.get_inputs()
        want = [3, 2] if self.is_set else [2]
        if [len(i.shape) for i in inputs] != want or \
                inputs[0].shape[-1] != N_INPUT and not isinstance(inputs[0].shape[-1], str):
            takes = f"[batch, candidates, {N_INPUT}] + mask" if self.is_set else f"[batch, {N_INPUT}]"
            raise ModelError(f"{path}: a {kind.name} model takes {takes}, this file has inputs "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        self.mask_name = inputs[1].name if self.is_set else None
        self.path = path
        self.meta = meta

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.is_set:
            feeds = {self.input_name: x[None], self.mask_name: np.ones((1, len(x)), dtype=bool)}
        else:
            feeds = {self.input_name: x}
        return self.session.run(None, feeds)[0].reshape(-1)


def load_scorer(path: str | Path):
    path = Path(path)
    if path.suffix == ".npz":  # the student MLP or the graph scorer, scored inside the solver core
        from .solver.policy import PolicyFileError, load_native

        try:
            return load_native(path)
        except PolicyFileError as e:
            raise ModelError(str(e)) from None
    if path.suffix == ".pt":
        from .models.io import load_scorer_pt

        return load_scorer_pt(path)
    return OnnxScorer(path)


def load_for_search(path: str | Path, flags: Mapping[str, Any] | None = None):
    """(scorer, settings) to run the learned heuristic with a model file outside the evaluate stage: each
    setting from `flags` when given, else the one stored in the file (how the pipeline evaluated it), else the
    default (learned_setting.choose; `Chosen.describe` says which)."""
    from .learned_setting import choose, stored_in

    scorer = load_scorer(path)
    return scorer, choose(stored_in(getattr(scorer, "meta", {}), str(path)), flags or {})
