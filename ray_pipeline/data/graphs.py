"""The constraint graphs of a dataset's states, for the graph scorer (ray_pipeline.graph). No Ray here: the train
driver runs `graph_arrays` in Ray Data's map_batches, the train stage on the test split directly.

The dataset stores no graphs (a dense graph per state would be ~100x a state's row): each state's domains and
weights are found again by replaying its instance's trace to the state's decision (the trace search is
deterministic; `steps.replay_states`, the label step's own replay). Each replayed state is checked against its
row -- the same candidates, the same feature rows -- so a dataset built with another trace setting or feature
version is refused by name instead of training on states it does not hold.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from .. import graph
from ..config import TraceSection
from ..solver import Solver, compile_instance
from . import steps
from .dataset import DatasetError

_FEATURE_TOL = 1e-4  # float32 rows written to Parquet and computed again


def graph_families_n(instances: pa.Table, families: list[str], split: str, source: str = "the dataset"
                     ) -> tuple[dict[str, str], int]:
    """{instance_id: instance JSON} of the `split`'s instances of `families`, and their largest variable count
    (what the split's graphs are padded to: every batch of a split has one shape, and a worker's cached shard is
    their concatenation)."""
    fam, sp = instances["family"].to_pylist(), instances["split"].to_pylist()
    keep = [i for i in range(len(fam)) if fam[i] in families and sp[i] == split]
    if not keep:
        raise DatasetError(f"{source}: no {split} instances of {families} (train.graph.families names what the "
                           "graph scorer trains on)")
    t = instances.take(keep)
    return dict(zip(t["instance_id"].to_pylist(), t["instance_json"].to_pylist())), max(t["n_vars"].to_pylist())


def graph_arrays(states: pa.Table, instances: Mapping[str, str], trace: TraceSection, k_max: int, n_max: int
                 ) -> dict[str, np.ndarray]:
    """The graph columns (kinds.GRAPH_COLUMNS) of `states`' rows, in row order: node features [B, n_max, F],
    edge features [B, n_max, n_max, F], adjacency [B, n_max, n_max], candidate nodes [B, k_max] (0-padded)."""
    rows = states.select(["state_id", "instance_id", "decision", "candidates", "features"]).to_pylist()
    b = len(rows)
    out = {"g_nodes": np.zeros((b, n_max, len(graph.NODE_FEATURES)), np.float32),
           "g_edges": np.zeros((b, n_max, n_max, len(graph.EDGE_FEATURES)), np.float32),
           "g_adj": np.zeros((b, n_max, n_max), np.float32), "g_cand": np.zeros((b, k_max), np.int64)}
    by_instance: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_instance.setdefault(r["instance_id"], []).append(i)
    for iid, idx in by_instance.items():
        if iid not in instances:
            raise DatasetError(f"state {rows[idx[0]]['state_id']}: instance {iid} is not among the split's graph "
                               "families' instances")
        inst = steps.loads(instances[iid], iid)
        compiled = compile_instance(inst)
        sup = graph.supports(compiled)
        snaps = steps.replay_states(inst, compiled, sorted({rows[i]["decision"] for i in idx}), trace)
        for i in idx:
            r = rows[i]
            g = _checked_graph(r, snaps, inst, compiled, sup, trace)
            try:
                p = graph.padded(g, n_max)
            except graph.GraphError as e:
                raise DatasetError(f"state {r['state_id']}: {e}") from None
            out["g_nodes"][i], out["g_edges"][i], out["g_adj"][i] = p["nodes"], p["edges"], p["adj"]
            out["g_cand"][i, : len(r["candidates"])] = r["candidates"]
    return out


def _checked_graph(row: dict[str, Any], snaps, inst, compiled, sup: graph.Supports, trace: TraceSection
                   ) -> dict[str, np.ndarray]:
    sid = row["state_id"]
    if row["decision"] not in snaps:
        raise DatasetError(f"state {sid}: the replayed search of {inst.name} ends before decision {row['decision']} "
                           "(a dataset of another trace setting?)")
    dom, weights, depth = snaps[row["decision"]]
    s = Solver(inst, heuristic=trace.heuristic, propagation=trace.propagation, domains=dom, weights=weights,
               compiled=compiled)
    cands = list(row["candidates"])
    if s.dom_wdeg_order(s.unassigned())[: len(cands)] != cands:
        raise DatasetError(f"state {sid}: the replayed state has other candidates than the stored row "
                           "(a dataset of another trace setting?)")
    # the rows hold the state features too (depth, failures, weight statistics): a replay that took another path
    # to the same decision index would show there, not only in the candidates' own columns
    feats, stored = s.features(cands, depth), np.asarray(row["features"], np.float32)
    if feats.shape != stored.shape or not np.allclose(feats, stored, atol=_FEATURE_TOL):
        raise DatasetError(f"state {sid}: the replayed state's feature rows differ from the stored ones (a dataset "
                           "of another feature version?)")
    try:
        return graph.state_graph(sup, dom, weights, cands)
    except graph.GraphError as e:
        raise DatasetError(f"state {sid}: {e}") from None
