"""Feature extraction: the ONE module the dataset pipeline and the solver's learned heuristic share.

Three vectors, each with a fixed name list:
- candidate features: one row per candidate variable at a decision,
- state features: the search state at that decision (appended to every candidate row for the models),
- instance features: a whole instance, for the cost predictor.
Counts are log1p-compressed here; centring/scaling is learned from the train split and embedded in the models.
Change anything here -> bump FEATURE_VERSION (datasets and checkpoints record it and refuse a mismatch).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .problems.instance import Instance
    from .solver.core import Solver

FEATURE_VERSION = "v1"

CANDIDATE_FEATURES = (
    "log_dom", "dom_rel", "log_ddeg", "log_wdeg", "log_dom_wdeg", "log_dom_ddeg", "static_deg_rel",
    "wdeg_share", "dom_wdeg_vs_best", "dom_vs_min", "wdeg_vs_max", "ddeg_vs_max", "nbr_assigned_frac",
    "nbr_pressure", "mean_tightness", "min_clause_open", "jw_score", "polarity_balance", "order_pos",
)
STATE_FEATURES = (
    "depth_rel", "assigned_frac", "mean_dom_rel", "log_conflicts", "cands_rel", "is_clausal", "log_n",
    "log_max_dom", "log_n_cons",
)
INPUT_FEATURES = CANDIDATE_FEATURES + STATE_FEATURES  # what the scorer models see per candidate
INSTANCE_FEATURES = (
    "log_n", "log_max_dom", "mean_dom_rel", "log_n_binary", "log_n_clauses", "density", "mean_deg_rel",
    "max_deg_rel", "std_deg_rel", "mean_tightness", "max_tightness", "clause_ratio", "mean_clause_len",
    "fixed_frac", "log_space_per_var", "kappa", "is_clausal", "log_edges_per_var",
)
N_CAND, N_STATE, N_INPUT, N_INSTANCE = len(CANDIDATE_FEATURES), len(STATE_FEATURES), len(INPUT_FEATURES), len(INSTANCE_FEATURES)


def _raw_candidate(s: "Solver", x: int, active: list[bool] | None) -> tuple:
    dom, w, tight = s.dom, s.weights, s.tightness
    ddeg = wdeg = assigned = 0
    pressure = tsum = 0.0
    for y, cid in s.var_bin[x]:
        dy = dom[y]
        if dy & (dy - 1):
            ddeg += 1
            wdeg += w[cid]
            pressure += 1.0 / dy.bit_count()
            tsum += tight[cid]
        else:
            assigned += 1
    min_open, jw, pos, neg = 0, 0.0, 0, 0
    if active is not None:
        nb = s.n_bin
        for j in s.occ[x]:
            if not active[j]:
                continue
            ddeg += 1
            wdeg += w[nb + j]
            tsum += tight[nb + j]
            n_open = 0
            for v, a in s.clauses[j]:
                if dom[v] >> a & 1:
                    n_open += 1
                if v == x:
                    if a:
                        pos += 1
                    else:
                        neg += 1
            jw += 2.0 ** -n_open
            if not min_open or n_open < min_open:
                min_open = n_open
    return dom[x].bit_count(), ddeg, wdeg, assigned, pressure, tsum, min_open, jw, pos, neg


def candidate_features(s: "Solver", cands: list[int], depth: int) -> np.ndarray:
    """[len(cands), N_INPUT] float32: candidate features followed by the state features."""
    active = s.active_clauses() if s.clauses else None
    raws = [_raw_candidate(s, x, active) for x in cands]
    k = len(cands)
    dw = [r[0] / r[2] if r[2] else r[0] * 2.0 for r in raws]
    best_dw = min(dw)
    min_dom = min(r[0] for r in raws)
    max_w = max(r[2] for r in raws) or 1
    max_dd = max(r[1] for r in raws) or 1
    total_w = sum(r[2] for r in raws) or 1
    out = np.empty((k, N_INPUT), dtype=np.float32)
    order = sorted(range(k), key=lambda i: (dw[i], s.var_rank[cands[i]]))
    pos_of = [0] * k
    for p, i in enumerate(order):
        pos_of[i] = p
    for i, (x, r) in enumerate(zip(cands, raws)):
        d, ddeg, wdeg, assigned, pressure, tsum, min_open, jw, pos, neg = r
        n_nbr = len(s.var_bin[x])
        out[i, :N_CAND] = (
            math.log1p(d), d / s.init_size[x], math.log1p(ddeg), math.log1p(wdeg),
            math.log1p(dw[i]), math.log1p(d / ddeg if ddeg else d * 2.0), s.static_deg[x] / max(1, s.n - 1),
            wdeg / total_w, dw[i] / best_dw if best_dw > 0 else 1.0, d / min_dom, wdeg / max_w, ddeg / max_dd,
            assigned / n_nbr if n_nbr else 1.0, pressure / ddeg if ddeg else 0.0, tsum / ddeg if ddeg else 0.0,
            1.0 / min_open if min_open else 0.0, jw, abs(pos - neg) / (pos + neg) if pos + neg else 0.0,
            pos_of[i] / max(1, k - 1),
        )
    out[:, N_CAND:] = state_features(s, depth, k)
    return out


def state_features(s: "Solver", depth: int, n_cands: int) -> np.ndarray:
    dom, n = s.dom, s.n
    un = [v for v in range(n) if dom[v] & (dom[v] - 1)]
    mean_rel = sum(dom[v].bit_count() / s.init_size[v] for v in un) / len(un) if un else 0.0
    conflicts = sum(s.weights) - s.n_cons
    return np.array([
        depth / n, 1.0 - len(un) / n, mean_rel, math.log1p(conflicts), n_cands / n, float(bool(s.clauses)),
        math.log(n), math.log(max(2, max(s.init_size))), math.log1p(s.n_cons),
    ], dtype=np.float32)


def instance_features(inst: "Instance") -> np.ndarray:
    """[N_INSTANCE] float32 description of a whole instance (cost predictor input)."""
    from .solver.core import compile_instance

    s = compile_instance(inst)  # merged constraints and their tightness
    n = inst.n
    sizes = [d.bit_count() for d in inst.domains]
    max_dom = max(d.bit_length() for d in inst.domains)
    deg = np.array(s.static_deg, dtype=np.float64)
    nb, nc = s.n_bin, len(s.clauses)
    tight_all = s.tightness
    space = sum(math.log(max(1, z)) for z in sizes)
    # Gent et al.'s constrainedness kappa = -sum log2(1 - t_c) / sum log2 |D_v|
    kappa = -sum(math.log(max(1e-9, 1.0 - t)) for t in tight_all) / space if space > 0 else 0.0
    return np.array([
        math.log(n), math.log(max(2, max_dom)), float(np.mean(sizes)) / max_dom, math.log1p(nb), math.log1p(nc),
        2.0 * nb / (n * (n - 1)) if n > 1 else 0.0, float(deg.mean()) / max(1, n - 1),
        float(deg.max()) / max(1, n - 1), float(deg.std()) / max(1, n - 1),
        float(np.mean(tight_all)) if tight_all else 0.0, float(np.max(tight_all)) if tight_all else 0.0,
        nc / n, float(np.mean([len(c) for c in s.clauses])) if nc else 0.0,
        sum(1 for z in sizes if z == 1) / n, space / n, kappa, float(nc > 0), math.log1p(nb / n),
    ], dtype=np.float32)
