"""A graph model as the solver core's native policy (`models/graph/model.native.npz`, solver.policy.NativeGraph):
its arrays taken from the PyTorch GraphScorer, and the file kept only when the core scores live search states as
PyTorch does. The train stage writes it beside model.pt; `bench learned/heldout --model .../model.native.npz`
runs it with no call into Python per decision."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..kinds import kind_of
from ..paths import NATIVE_FILE
from ..solver import Solver
from ..solver.policy import NativeGraph, PolicyFileError, save_graph
from .io import GraphTorchScorer
from .nets import GraphScorer, Normalize

log = logging.getLogger(__name__)


def native_params(model: GraphScorer) -> dict[str, np.ndarray]:
    """The network's arrays by the names of solver.policy.graph_array_names."""
    def linears(seq: nn.Module) -> list[nn.Linear]:
        return [m for m in seq.modules() if isinstance(m, nn.Linear)]

    p: dict[str, Any] = {}

    def put(name: str, lin: nn.Linear) -> None:
        p[f"{name}.w"] = lin.weight
        if lin.bias is not None:
            p[f"{name}.b"] = lin.bias

    e0, e1 = linears(model.embed)
    put("embed0", e0)
    put("embed1", e1)
    for r, rd in enumerate(model.rounds):
        u0, u1 = linears(rd.update)
        for name, lin in (("src", rd.src), ("dst", rd.dst), ("edge", rd.edge), ("up0", u0), ("up1", u1)):
            put(f"r{r}.{name}", lin)
        p[f"r{r}.ln.w"], p[f"r{r}.ln.b"] = rd.norm.weight, rd.norm.bias
    for i, lin in enumerate(linears(model.head)):
        put(f"head{i}", lin)
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in p.items()}


class _Compare:
    """A graph scorer for Solver(scorer=...) that scores with PyTorch (so the search follows PyTorch's choices) and
    records, at each call, how far the native scores of the same live state are from PyTorch's."""

    wants_state = True

    def __init__(self, torch_scorer: GraphTorchScorer, core_scorer: NativeGraph):
        # (not `.native`: Solver would take this object for a scorer the core runs itself)
        self.torch_scorer, self.core_scorer, self.diffs = torch_scorer, core_scorer, []

    def score_state(self, solver, cands, x):
        want = self.torch_scorer.score_state(solver, cands, x)
        got = self.core_scorer.score_solver(solver, cands, x)
        self.diffs.append(float(np.abs(np.asarray(want, np.float64) - got).max()))
        return want


def write(model: GraphScorer, spec: dict[str, Any], out_dir: Path, instances: Sequence, top_k: int,
          meta: dict[str, str] | None = None, atol: float = 1e-4, node_limit: int = 300) -> dict[str, Any]:
    """Write out_dir/model.native.npz if the core's scores equal PyTorch's within `atol` at every decision of a
    learned search (every depth, top-`top_k`, `node_limit` nodes) on each of `instances`; else leave no file and
    say so (log + the returned record). `meta`: string entries the file carries (solver.policy.save_graph)."""
    out_dir = Path(out_dir)
    final, partial = out_dir / NATIVE_FILE, out_dir / f".{NATIVE_FILE}.partial"
    save_graph(partial, kind=spec["kind"], mean=model.norm.mean.numpy(), std=model.norm.std.numpy(), clip=Normalize.CLIP,
               hidden=model.embed[-1].out_features, rounds=len(model.rounds), params=native_params(model), meta=meta)
    try:
        native = NativeGraph(partial)
    except PolicyFileError as e:  # e.g. non-finite trained weights: the model stays usable from PyTorch
        partial.unlink()
        log.warning("%s: not written: %s", final, e)
        return {"file": None, "error": str(e), "atol": atol}
    threads = torch.get_num_threads()  # the PyTorch scorer takes one thread (as in a search); give them back after
    try:
        cmp = _Compare(GraphTorchScorer(model, kind_of(spec["kind"]), spec, str(out_dir / "model.pt")), native)
        for inst in instances:
            Solver(inst, heuristic="learned", scorer=cmp, top_k=top_k, node_limit=node_limit).solve()
    finally:
        torch.set_num_threads(threads)
    worst = max(cmp.diffs, default=0.0)
    ok = bool(cmp.diffs) and worst <= atol
    if ok:
        partial.replace(final)
    else:
        partial.unlink()
        log.warning("%s: not written: %s", final, f"the core's scores differ from PyTorch's by {worst:.3g} (> {atol:g})"
                    if cmp.diffs else "no decision state to check it on")
    return {"file": NATIVE_FILE if ok else None, "states": len(cmp.diffs), "max_abs_diff": worst, "atol": atol,
            "instances": len(instances), "params": native.params}
