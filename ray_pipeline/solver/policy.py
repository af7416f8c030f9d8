"""Policies the learned heuristic can run, besides any Python scorer(features [k, F]) -> [k]:

- `NativeMlp`: the student MLP evaluated inside the core from a weights file (`model.native.npz`, written by the
  export stage, which checks it against ONNX Runtime on dataset rows). The search never calls into Python to
  score candidates: features and scores both stay in C++.

The file format is plain arrays (np.load with allow_pickle=False: nothing in it can run code):
  kind, feature_version, features   strings: what the model is and which columns it reads, in order
  mean, std, clip                   the input normalisation: clamp((x - mean) / std, -clip, clip)
  n_layers, relu                    layer count; relu[l] = a ReLU follows layer l
  w{l}, b{l}                        layer l's weight [out, in] and bias [out] (PyTorch's Linear layout)
  any other scalar string           metadata, like an ONNX file's metadata_props (`meta` of save_mlp and
                                    NativeMlp), e.g. `learned_setting` (ray_pipeline.learned_setting)
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .core import _native
from .schema import FEATURE_VERSION, INPUT_FEATURES

SUFFIX = ".npz"


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the reason."""


def save_mlp(path: Path, *, kind: str, mean, std, clip: float, layers: list[tuple[np.ndarray, np.ndarray, bool]],
             meta: Optional[dict[str, str]] = None) -> None:
    """Write a native MLP policy file (callers write to a temporary name and rename it once checked); `meta`
    adds string entries (scalar string arrays) beside the model's own."""
    arrays: dict[str, Any] = {
        "kind": np.array(kind), "feature_version": np.array(FEATURE_VERSION), "features": np.array(INPUT_FEATURES),
        "mean": np.asarray(mean, dtype=np.float32), "std": np.asarray(std, dtype=np.float32),
        "clip": np.array(clip, dtype=np.float32), "n_layers": np.array(len(layers)),
        "relu": np.array([r for _, _, r in layers], dtype=bool)}
    for i, (w, b, _) in enumerate(layers):
        arrays[f"w{i}"] = np.asarray(w, dtype=np.float32)
        arrays[f"b{i}"] = np.asarray(b, dtype=np.float32)
    clash = sorted(set(meta or {}) & set(arrays))
    if clash:
        raise ValueError(f"save_mlp: metadata keys {clash} are the model's own arrays")
    for name in sorted(meta or {}):  # sorted: the file stays a function of its contents
        arrays[name] = np.array(str(meta[name]))
    # np.savez stamps each member with the current time; fixed stamps keep the file a function of the weights
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


class NativeMlp:
    """A scorer the core runs natively (Solver(scorer=NativeMlp(...)) passes it to C++, not as a callback).
    Callable from Python too (features [k, F] -> scores [k]), for parity checks."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise PolicyFileError(f"{path}: no such model file")
        if not zipfile.is_zipfile(path):  # np.load would try anything else as a pickle, and say so
            raise PolicyFileError(f"{path}: not a native policy file (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
            raise PolicyFileError(f"{path}: not a native policy file ({type(e).__name__}: {str(e)[:200]})") from None
        self._build(a, str(path))
        self.path = path

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "arrays") -> "NativeMlp":
        """The same checks and core object as from a file (benchmarks derive variants of a loaded model)."""
        self = cls.__new__(cls)
        self._build(dict(arrays), source)
        self.path = None
        return self

    def _build(self, a: dict[str, np.ndarray], path: str) -> None:
        need = {"kind", "feature_version", "features", "mean", "std", "clip", "n_layers", "relu"}
        if need - set(a):
            raise PolicyFileError(f"{path}: missing arrays {sorted(need - set(a))}")
        if str(a["feature_version"]) != FEATURE_VERSION:
            raise PolicyFileError(f"{path}: built for features {str(a['feature_version'])!r}, this solver has "
                                  f"{FEATURE_VERSION!r}; re-export the model")
        if tuple(str(f) for f in a["features"]) != INPUT_FEATURES:
            raise PolicyFileError(f"{path}: feature names differ from this solver's; re-export the model")
        n = int(a["n_layers"])
        missing = [k for i in range(n) for k in (f"w{i}", f"b{i}") if k not in a]
        if missing or len(a["relu"]) != n:
            raise PolicyFileError(f"{path}: {n} layers declared, arrays {missing or ['relu']} do not match")
        try:
            self.native = _native.Mlp(len(INPUT_FEATURES), float(a["clip"]), a["mean"].astype(np.float32).tolist(),
                                      a["std"].astype(np.float32).tolist(),
                                      [a[f"w{i}"].astype(np.float32).reshape(-1).tolist() for i in range(n)],
                                      [a[f"b{i}"].astype(np.float32).reshape(-1).tolist() for i in range(n)],
                                      [bool(r) for r in a["relu"]])
        except ValueError as e:  # the core's own checks (shapes, finite values), as std::invalid_argument
            raise PolicyFileError(f"{path}: {e}") from None
        self.kind, self.arrays = str(a["kind"]), a
        # the file's scalar strings (kind, feature_version, anything save_mlp was given): its metadata
        self.meta = {k: str(v) for k, v in a.items() if v.dtype.kind == "U" and v.ndim == 0}
        self.params = sum(a[f"w{i}"].size + a[f"b{i}"].size for i in range(n))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.native(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)
