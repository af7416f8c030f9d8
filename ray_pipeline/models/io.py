"""Building models from config, and saving/loading them without pickles of code.

A model file is `model.pt` = a state dict (tensors only) loaded with `torch.load(weights_only=True)`, next to
`model.json` = the plain-JSON spec needed to rebuild it (kind, sizes, feature version, feature names,
config and dataset hashes). Nothing loaded ever executes code from the file.
"""
from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import atomic
from ..features import FEATURE_VERSION
from ..errors import ModelError
from ..kinds import Kind, kind_of


def build(spec: dict[str, Any]) -> torch.nn.Module:
    return kind_of(spec["kind"]).network(spec["hparams"], spec["norm"])


def make_spec(kind: str, hparams: dict[str, Any], norm: dict[str, list[float]], **extra: Any) -> dict[str, Any]:
    return {"format": "ray_pipeline.model", "version": 1, "kind": kind, "hparams": hparams, "norm": norm,
            "feature_version": FEATURE_VERSION,
            "features": list(kind_of(kind).features), **extra}


def save(model: torch.nn.Module, spec: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic.file(out_dir / "model.pt") as tmp:
        torch.save(state, tmp)
    atomic.write_json(out_dir / "model.json", spec)
    return out_dir / "model.pt"


def check_spec(spec: Any, source: Path, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("format") != "ray_pipeline.model":
        raise ModelError(f"{source}: not a ray_pipeline model spec")
    if spec.get("feature_version") != FEATURE_VERSION:
        raise ModelError(f"{source}: built for features {spec.get('feature_version')!r}, this code has "
                             f"{FEATURE_VERSION!r}")
    for key, want in (expect or {}).items():
        if spec.get(key) != want:
            raise ModelError(f"{source}: {key} is {spec.get(key)!r}, expected {want!r} (a model or "
                                 f"checkpoint from another config or dataset)")
    return spec


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except Exception as e:  # pickle errors, truncated zip, unsafe globals refused by weights_only
        raise ModelError(f"{path}: cannot load as a weights-only state dict ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None


def load(model_dir: Path, expect: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    model_dir = Path(model_dir)
    spec_file = model_dir / "model.json"
    try:
        spec = json.loads(spec_file.read_text())
    except FileNotFoundError:
        raise ModelError(f"{spec_file}: missing model spec") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{spec_file}: not valid JSON ({e})") from None
    check_spec(spec, spec_file, expect)
    model = build(spec)
    state = load_state(model_dir / "model.pt")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{model_dir / 'model.pt'}: does not match its spec ({str(e)[:200]})") from None
    model.eval()
    return model, spec


class TorchScorer:
    """A scorer callback for the solver from a PyTorch model (development; deployment uses ONNX)."""

    def __init__(self, model: torch.nn.Module, kind: Kind, meta: dict[str, Any] | None = None):
        self.model, self.kind = model.eval(), kind
        self.meta = dict(meta or {})  # the model.json spec: the metadata an exported file carries, and more
        torch.set_num_threads(1)

    @torch.inference_mode()
    def __call__(self, x):
        return self.kind.forward(self.model, torch.from_numpy(x)).numpy()


class GraphTorchScorer(TorchScorer):
    """A graph kind's scorer: the solver hands it its state (`wants_state`), and it builds the state's constraint
    graph itself (ray_pipeline.graph: the same function the datasets' graphs come from) at every call."""

    wants_state = True
    reads_graph = True  # binary constraints only

    def __init__(self, model: torch.nn.Module, kind: Kind, meta: dict[str, Any], source: str):
        from ..graph import GRAPH_VERSION

        if meta.get("graph_version") != GRAPH_VERSION:
            raise ModelError(f"{source}: built for graph {meta.get('graph_version')!r}, this version has "
                             f"{GRAPH_VERSION!r}; train it again (`run CONFIG --stages train --force`)")
        super().__init__(model, kind, meta)
        self._supports: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # per compiled instance

    def __call__(self, x):
        raise ModelError("a graph scorer reads the solver's state: run it through Solver(scorer=...), which hands "
                         "the state over (score_state)")

    @torch.inference_mode()
    def score_state(self, solver, cands: list[int], x: np.ndarray) -> np.ndarray:
        from .. import graph

        sup = self._supports.get(solver.compiled)
        if sup is None:
            sup = self._supports[solver.compiled] = graph.supports(solver.compiled)
        g = graph.state_graph(sup, solver.dom, solver.weights, cands)
        batch = {"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None],
                 "mask": torch.ones(1, len(cands), dtype=torch.bool),
                 "g_nodes": torch.from_numpy(g["nodes"])[None], "g_edges": torch.from_numpy(g["edges"])[None],
                 "g_adj": torch.from_numpy(g["adj"])[None], "g_cand": torch.tensor([list(cands)], dtype=torch.long)}
        return self.kind.batch_scores(self.model, batch)[0].numpy()


def load_scorer_pt(path: Path) -> TorchScorer:
    model, spec = load(Path(path).parent)
    kind = kind_of(spec["kind"], str(path))
    if not kind.scorer:
        raise ModelError(f"{path}: a {kind.name} model is not a variable scorer")
    if kind.graph:
        return GraphTorchScorer(model, kind, spec, str(path))
    return TorchScorer(model, kind, spec)
