"""The constraint graph of a search state: what a graph model reads besides the candidates' feature rows.

Why a graph: a candidate's 34 feature rows describe it and its neighbours; the probe labels depend on the whole
subproblem (README, "What is measured": trees and local statistics on those rows recover ~1/10 of dom/wdeg's
per-decision regret, a message-passing model on this graph more, with more data). Pure numpy: no Ray, no torch.

Dense, one node per variable (a variable's index is its node), so candidate variables index nodes directly:
- nodes [n, len(NODE_FEATURES)]: the variable under the current domains and constraint weights; assigned
  variables (one value left) are masked out (`open`) and have all-zero rows;
- edges [n, n, len(EDGE_FEATURES)], `adj` [n, n]: one edge each way for every merged binary constraint between
  two open variables; edges[i, j] describes the message i -> j ("src" = i, "dst" = j).
Binary constraints only: an instance with clauses (k-SAT) has no graph here (GraphError).
Change anything -> bump GRAPH_VERSION: models record it, the search refuses a model of another version, and
the version is part of a graph model's train key (`run --stages train --force` trains it again).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from .solver.core import Compiled

GRAPH_VERSION = "graph-1"
NODE_FEATURES = (
    "log_dom",            # log |D|
    "log1p_open_deg",     # open neighbours (merged constraints to open variables)
    "log1p_wdeg",         # sum of those constraints' weights (dom/wdeg's denominator)
    "log_dom_over_wdeg",  # log |D| - log1p(wdeg): dom/wdeg's score, logged
    "mean_tightness",     # mean tightness of those constraints under the current domains
    "log1p_wtight",       # sum of weight x tightness
    "is_candidate",       # one of the candidates scored at this decision
    "candidate_rank",     # its position in dom/wdeg's order / number of candidates (1 for non-candidates)
    "open_share",         # open variables / all variables (the same on every node: how deep the state is)
)
EDGE_FEATURES = (
    "tightness",          # share of the pair's current value pairs the constraint forbids
    "log1p_weight",       # the constraint's dom/wdeg weight
    "src_log_support",    # mean over src's values of log(share of dst's values supporting it)
    "dst_log_support",    # the same from dst's side
)
_LOG_FLOOR = 1e-3  # a value with no support left in a neighbour: log of this instead of -inf


class GraphError(ValueError):
    """An instance or state this graph cannot describe; the message names it."""


@dataclass(frozen=True)
class Supports:
    """An instance's binary constraints as dense tables, built once per instance (many states share them):
    pairs [m, 2] (x < y) and table [m, D, D] with table[k, a, b] = 1 when (x=a, y=b) is allowed."""

    n: int
    D: int
    pairs: np.ndarray
    table: np.ndarray


def supports(c: "Compiled") -> Supports:
    if c.clauses:
        raise GraphError(f"an instance with {len(c.clauses)} clauses has no constraint graph here "
                         f"(binary constraints only)")
    # every variable with a constraint has arcs both ways, each as long as its domain's highest value + 1
    D = max((len(sup) for arcs in c.arcs for _, sup, _ in arcs), default=1)
    pairs = np.asarray(c.cvars[: c.n_bin], dtype=np.int64).reshape(-1, 2)
    table = np.zeros((c.n_bin, D, D), dtype=np.float32)
    for x in range(c.n):
        for y, sup, cid in c.arcs[x]:
            if x < y:  # the arc stored from the low variable: sup[a] = y-values allowed with x=a
                for a, mask in enumerate(sup):  # Python ints: a mask of 64+ values overflows numpy's int64
                    table[cid, a] = [(mask >> b) & 1 for b in range(D)]
    return Supports(c.n, D, pairs, table)


def _bits(domains: Sequence[int], D: int) -> np.ndarray:
    """[n, D] 0/1 of each domain's values below D (the tables' width: higher values have no constraint)."""
    out = np.zeros((len(domains), D), dtype=np.float32)
    for i, d in enumerate(domains):
        for a in range(D):
            if d >> a & 1:
                out[i, a] = 1.0
    return out


def state_graph(s: Supports, domains: Sequence[int], weights: Sequence[float], candidates: Sequence[int]
                ) -> dict[str, np.ndarray]:
    """The graph of one state: nodes [n, F_node], edges [n, n, F_edge], adj [n, n] and open [n] (float32 0/1).
    `weights` are the solver's constraint weights (binary constraints first, as the core numbers them);
    `candidates` are the variables scored, best-first by dom/wdeg."""
    n, D = s.n, s.D
    if len(domains) != n:
        raise GraphError(f"{len(domains)} domains for {n} variables")
    if len(weights) < len(s.pairs):
        raise GraphError(f"{len(weights)} weights for {len(s.pairs)} binary constraints")
    dom = _bits(domains, D)
    size = np.array([int(d).bit_count() for d in domains], dtype=np.float32)
    if (size == 0).any():
        raise GraphError(f"variable {int(np.flatnonzero(size == 0)[0])} has an empty domain: not a search state")
    is_open = size > 1
    x, y = s.pairs[:, 0], s.pairs[:, 1]
    keep = is_open[x] & is_open[y]
    x, y, tab = x[keep], y[keep], s.table[keep]
    w = np.asarray(weights, dtype=np.float32)[: len(s.pairs)][keep]
    dx, dy = dom[x], dom[y]
    allowed = np.einsum("ka,kab,kb->k", dx, tab, dy)
    tight = 1.0 - allowed / (size[x] * size[y])
    # per value of x: the share of y's current values that support it (and the same for y)
    share_x = np.einsum("kab,kb->ka", tab, dy) / size[y][:, None]
    share_y = np.einsum("kab,ka->kb", tab, dx) / size[x][:, None]
    sup_x = (np.log(np.maximum(share_x, _LOG_FLOOR)) * dx).sum(1) / size[x]
    sup_y = (np.log(np.maximum(share_y, _LOG_FLOOR)) * dy).sum(1) / size[y]

    edges = np.zeros((n, n, len(EDGE_FEATURES)), dtype=np.float32)
    adj = np.zeros((n, n), dtype=np.float32)
    lw = np.log1p(w)
    edges[x, y] = np.stack([tight, lw, sup_x, sup_y], 1)
    edges[y, x] = np.stack([tight, lw, sup_y, sup_x], 1)
    adj[x, y] = adj[y, x] = 1.0

    deg = adj.sum(0)
    wdeg = np.zeros(n, dtype=np.float32)
    tsum = np.zeros(n, dtype=np.float32)
    wt = np.zeros(n, dtype=np.float32)
    for b in (x, y):
        np.add.at(wdeg, b, w)
        np.add.at(tsum, b, tight)
        np.add.at(wt, b, w * tight)
    cand = np.zeros(n, dtype=np.float32)
    rank = np.ones(n, dtype=np.float32)
    cands = np.asarray(list(candidates), dtype=np.int64)
    if len(cands) and (cands.min() < 0 or cands.max() >= n or not is_open[cands].all()):
        raise GraphError(f"candidates {cands.tolist()} are not all open variables of {n}")
    cand[cands] = 1.0
    rank[cands] = np.arange(len(cands), dtype=np.float32) / max(1, len(cands))
    log_dom = np.log(size)
    nodes = np.stack([log_dom, np.log1p(deg), np.log1p(wdeg), log_dom - np.log1p(wdeg),
                      tsum / np.maximum(deg, 1.0), np.log1p(wt), cand, rank,
                      np.full(n, is_open.sum() / n, dtype=np.float32)], 1).astype(np.float32)
    nodes[~is_open] = 0.0
    return {"nodes": nodes, "edges": edges, "adj": adj, "open": is_open.astype(np.float32)}


def padded(g: dict[str, np.ndarray], n_max: int) -> dict[str, np.ndarray]:
    """The same graph with n_max nodes (extra nodes closed, without edges): states of instances of several
    sizes in one batch."""
    n = len(g["nodes"])
    if n > n_max:
        raise GraphError(f"a graph of {n} nodes does not fit {n_max}")
    p = n_max - n
    return {"nodes": np.pad(g["nodes"], ((0, p), (0, 0))), "edges": np.pad(g["edges"], ((0, p), (0, p), (0, 0))),
            "adj": np.pad(g["adj"], ((0, p), (0, p))), "open": np.pad(g["open"], (0, p))}
