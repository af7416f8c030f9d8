"""Policies the learned heuristic can run, besides any Python scorer(features [k, F]) -> [k]:

- `NativeMlp`: the student MLP evaluated inside the core from a weights file (`model.native.npz`, written by the
  export stage, which checks it against ONNX Runtime on dataset rows). The search never calls into Python to
  score candidates: features and scores both stay in C++.
- `NativeGraph`: the graph scorer evaluated inside the core (`models/graph/model.native.npz`, written by the train
  stage, which checks it against PyTorch on live search states): the core builds the state's constraint graph
  from its own domains and weights (native/graph.cpp, the features of ray_pipeline/graph.py) and runs the network.
  `load_native` reads either file (a graph scorer's has a `graph_version`).

The file format is plain arrays (np.load with allow_pickle=False: nothing in it can run code):
  kind, feature_version, features   strings: what the model is and which columns it reads, in order
  mean, std, clip                   the input normalisation: clamp((x - mean) / std, -clip, clip)
  n_layers, relu                    layer count; relu[l] = a ReLU follows layer l
  w{l}, b{l}                        layer l's weight [out, in] and bias [out] (PyTorch's Linear layout)
  any other scalar string           metadata, like an ONNX file's metadata_props (`meta` of save_mlp and
                                    NativeMlp), e.g. `learned_setting` (ray_pipeline.learned_setting)
A graph scorer's file has kind, feature_version, features, mean, std, clip as above, and
  graph_version                     the graph's definition (native/graph.hpp kGraphVersion = graph.GRAPH_VERSION)
  hidden, rounds                    node state width, message-passing rounds
  embed0.w, embed0.b, ...           the network's arrays by name (graph_array_names), weights [out, in]
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .core import _native
from .schema import FEATURE_VERSION, INPUT_FEATURES

SUFFIX = ".npz"


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the reason."""


def _write_npz(path: "Path | io.BytesIO", arrays: dict[str, Any], meta: Optional[dict[str, str]]) -> None:
    clash = sorted(set(meta or {}) & set(arrays))
    if clash:
        raise ValueError(f"metadata keys {clash} are the model's own arrays")
    arrays = dict(arrays)
    for name in sorted(meta or {}):  # sorted: the file stays a function of its contents
        arrays[name] = np.array(str(meta[name]))
    # np.savez stamps each member with the current time; fixed stamps keep the file a function of the weights
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def with_meta(path: Path, meta: dict[str, str]) -> bytes:
    """The bytes of the policy file `path` with the metadata entries `meta` set (added or replaced), the arrays
    unchanged: how the export stage stores the evaluated setting in a file it did not write (the graph scorer's)."""
    a = _read_npz(Path(path))
    buf = io.BytesIO()
    _write_npz(buf, {k: v for k, v in a.items() if k not in meta}, meta)
    return buf.getvalue()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):  # np.load would try anything else as a pickle, and say so
        raise PolicyFileError(f"{path}: not a native policy file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise PolicyFileError(f"{path}: not a native policy file ({type(e).__name__}: {str(e)[:200]})") from None


def _check_inputs(a: dict[str, np.ndarray], path: str) -> None:
    if str(a["feature_version"]) != FEATURE_VERSION:
        raise PolicyFileError(f"{path}: built for features {str(a['feature_version'])!r}, this solver has "
                              f"{FEATURE_VERSION!r}; re-export the model")
    if tuple(str(f) for f in a["features"]) != INPUT_FEATURES:
        raise PolicyFileError(f"{path}: feature names differ from this solver's; re-export the model")


def _meta(a: dict[str, np.ndarray]) -> dict[str, str]:
    """The file's scalar strings (kind, feature_version, anything the writer was given): its metadata."""
    return {k: str(v) for k, v in a.items() if v.dtype.kind == "U" and v.ndim == 0}


def load_native(path: str | Path) -> "NativeMlp | NativeGraph":
    """The native policy in `path`: a graph scorer's file (it has a graph_version) or an MLP's."""
    a = _read_npz(Path(path))
    policy = (NativeGraph if "graph_version" in a else NativeMlp).from_arrays(a, str(path))
    policy.path = Path(path)
    return policy


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
    _write_npz(path, arrays, meta)


class _NativeFile:
    """A native policy file's arrays, checked and turned into the core's object (`native`) by `_build`."""

    def __init__(self, path: str | Path):
        self._build(_read_npz(Path(path)), str(path))
        self.path: Optional[Path] = Path(path)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "arrays"):
        """The same checks and core object as from a file (benchmarks derive variants of a loaded model)."""
        self = cls.__new__(cls)
        self._build(dict(arrays), source)
        self.path = None
        return self

    def _build(self, a: dict[str, np.ndarray], path: str) -> None:
        raise NotImplementedError


class NativeMlp(_NativeFile):
    """A scorer the core runs natively (Solver(scorer=NativeMlp(...)) passes it to C++, not as a callback).
    Callable from Python too (features [k, F] -> scores [k]), for parity checks."""

    def _build(self, a: dict[str, np.ndarray], path: str) -> None:
        need = {"kind", "feature_version", "features", "mean", "std", "clip", "n_layers", "relu"}
        if need - set(a):
            raise PolicyFileError(f"{path}: missing arrays {sorted(need - set(a))}")
        _check_inputs(a, path)
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
        self.meta = _meta(a)
        self.params = sum(a[f"w{i}"].size + a[f"b{i}"].size for i in range(n))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.native(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)

    def zeroed(self) -> "NativeMlp":
        """The same network with its score layer zeroed: all the arithmetic, every score 0 (benchmarks)."""
        last = int(self.arrays["n_layers"]) - 1
        return NativeMlp.from_arrays({**self.arrays, f"w{last}": np.zeros_like(self.arrays[f"w{last}"]),
                                      f"b{last}": np.zeros_like(self.arrays[f"b{last}"])}, "zeroed score layer")


def graph_array_names(rounds: int) -> list[str]:
    """The network arrays of a graph scorer's file, in the order of native/graph.hpp GraphNet."""
    names = ["embed0.w", "embed0.b", "embed1.w", "embed1.b"]
    for r in range(rounds):
        names += [f"r{r}.{k}" for k in ("src.w", "src.b", "dst.w", "edge.w", "up0.w", "up0.b", "up1.w", "up1.b",
                                        "ln.w", "ln.b")]
    return names + ["head0.w", "head0.b", "head1.w", "head1.b", "head2.w", "head2.b"]


def save_graph(path: Path, *, kind: str, mean, std, clip: float, hidden: int, rounds: int, params: dict[str, np.ndarray],
               meta: Optional[dict[str, str]] = None) -> None:
    """Write a native graph scorer file (callers write to a temporary name and rename it once checked); `meta` as
    in save_mlp."""
    names = graph_array_names(rounds)
    if sorted(params) != sorted(names):
        raise ValueError(f"save_graph: arrays {sorted(set(names) ^ set(params))} missing or unknown")
    arrays: dict[str, Any] = {
        "kind": np.array(kind), "feature_version": np.array(FEATURE_VERSION), "features": np.array(INPUT_FEATURES),
        "graph_version": np.array(_native.GRAPH_VERSION), "mean": np.asarray(mean, dtype=np.float32),
        "std": np.asarray(std, dtype=np.float32), "clip": np.array(clip, dtype=np.float32),
        "hidden": np.array(hidden), "rounds": np.array(rounds)}
    arrays.update({k: np.asarray(params[k], dtype=np.float32) for k in names})
    _write_npz(path, arrays, meta)


class NativeGraph(_NativeFile):
    """The graph scorer the core runs natively (Solver(scorer=NativeGraph(...)) passes it to C++). `score_solver`
    scores a live solver's state from Python, for parity checks."""

    reads_graph = True  # binary constraints only

    def _build(self, a: dict[str, np.ndarray], path: str) -> None:
        need = {"kind", "feature_version", "features", "graph_version", "mean", "std", "clip", "hidden", "rounds"}
        if need - set(a):
            raise PolicyFileError(f"{path}: missing arrays {sorted(need - set(a))}")
        _check_inputs(a, path)
        if str(a["graph_version"]) != _native.GRAPH_VERSION:
            raise PolicyFileError(f"{path}: built for graph {str(a['graph_version'])!r}, this solver has "
                                  f"{_native.GRAPH_VERSION!r}; train it again (`run CONFIG --stages train --force`)")
        for key, lo, hi in (("hidden", 1, 4096), ("rounds", 0, 64)):
            v = a[key]
            if v.ndim != 0 or v.dtype.kind not in "iu" or not lo <= int(v) <= hi:
                raise PolicyFileError(f"{path}: {key} must be an integer in [{lo}, {hi}], got {v!r}")
        rounds = int(a["rounds"])
        names = graph_array_names(rounds)
        missing = [k for k in names if k not in a]
        if missing:
            raise PolicyFileError(f"{path}: {rounds} rounds declared, arrays {missing} missing")
        numeric = ["mean", "std", "clip", *names]
        bad = [k for k in numeric if a[k].dtype.kind not in "fiu" or a[k].ndim != (0 if k == "clip" else
                                                                                   2 if k.endswith(".w") and not k.endswith("ln.w") else 1)]
        if bad:  # a weight stored transposed or flattened would load with the right count and score wrong
            raise PolicyFileError(f"{path}: arrays {bad} have the wrong type or number of dimensions")
        try:
            self.native = _native.GraphNet(len(INPUT_FEATURES), int(a["hidden"]), rounds, float(a["clip"]),
                                           a["mean"].astype(np.float32).tolist(), a["std"].astype(np.float32).tolist(),
                                           {k: a[k].astype(np.float32).reshape(-1).tolist() for k in names},
                                           {k: list(a[k].shape) for k in names if a[k].ndim == 2})
        except (TypeError, ValueError) as e:  # the core's own checks (shapes, finite values), as std::invalid_argument
            raise PolicyFileError(f"{path}: {e}") from None
        self.kind, self.arrays, self.meta = str(a["kind"]), a, _meta(a)
        self.params = sum(a[k].size for k in names)

    def score_solver(self, solver, cands: list[int], x: np.ndarray) -> np.ndarray:
        """Scores of `cands` (feature rows `x`) at `solver`'s current state, as its search would compute them."""
        core = solver._core
        return np.asarray(self.native.score(solver.compiled.native, core.domain_words(), core.weights(), list(cands),
                                            np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)

    def __call__(self, x):
        raise PolicyFileError("a graph scorer reads the solver's state: pass it to Solver(scorer=...), which runs it "
                              "in the core")

    def zeroed(self) -> "NativeGraph":
        """As NativeMlp.zeroed."""
        return NativeGraph.from_arrays({**self.arrays, "head2.w": np.zeros_like(self.arrays["head2.w"]),
                                  "head2.b": np.zeros_like(self.arrays["head2.b"])}, "zeroed score layer")
