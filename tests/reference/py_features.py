"""The pure-Python candidate and state features the native core replaced: the reference of
tests/unit/test_native_features.py and of the reference solver's learned heuristic (py_solver.py).

Reads the reference solver's Python state (int bitmask domains, arcs with support tuples). Column order is
the schema's (ray_pipeline.solver.schema), the same the native core computes.
"""
from __future__ import annotations

import math

import numpy as np

from ray_pipeline.features import N_INPUT

from .py_solver import Solver  # noqa: F401  (annotations: the reference solver's state is what this reads)


def _raw_candidate(s: "Solver", x: int, active: list[bool] | None) -> tuple:
    dom, w, tight = s.dom, s.weights, s.tightness
    a0 = s._value(x)  # the value the search tries first
    ddeg = wdeg = assigned = removed = total = wipe = 0
    pressure = tsum = 0.0
    min_left = 1.0
    for y, sup, cid, _cache in s.arcs[x]:
        dy = dom[y]
        if dy & (dy - 1):
            c = dy.bit_count()
            ddeg += 1
            wdeg += w[cid]
            pressure += 1.0 / c
            tsum += tight[cid]
            left = (dy & sup[a0]).bit_count()
            removed += c - left
            total += c
            if left == 0:
                wipe = 1
            elif left / c < min_left:
                min_left = left / c
        else:
            assigned += 1
    min_open, jw, pos, neg, units, conflict, sat, n_act = 0, 0.0, 0, 0, 0, 0, 0, 0
    if active is not None:
        nb = s.n_bin
        for j in s.occ[x]:
            if not active[j]:
                continue
            n_act += 1
            ddeg += 1
            wdeg += w[nb + j]
            tsum += tight[nb + j]
            n_open = lost = 0
            satisfied = False
            for v, a in s.clauses[j]:
                if dom[v] >> a & 1:
                    n_open += 1
                    if v == x:
                        if a == a0:
                            satisfied = True
                        else:
                            lost += 1
                if v == x:
                    if a:
                        pos += 1
                    else:
                        neg += 1
            jw += 2.0 ** -n_open
            if not min_open or n_open < min_open:
                min_open = n_open
            if satisfied:
                sat += 1
            elif n_open - lost == 0:
                conflict = 1
            elif n_open - lost == 1:
                units += 1
    return (dom[x].bit_count(), ddeg, wdeg, assigned, pressure, tsum, min_open, jw, pos, neg,
            removed / total if total else 0.0, wipe, min_left, units / n_act if n_act else 0.0, conflict,
            sat / n_act if n_act else 0.0)


def candidate_features(s: "Solver", cands: list[int], depth: int) -> np.ndarray:
    """[len(cands), N_INPUT] float32: candidate features followed by the state features.

    Plain Python on purpose: for ~8 candidates of ~20 neighbours, numpy's per-call overhead costs more than
    it saves (measured: 2x slower), and this runs inside the search loop."""
    active = s.active_clauses() if s.clauses else None
    raws = [_raw_candidate(s, x, active) for x in cands]
    k = len(cands)
    log1p = math.log1p
    dw = [r[0] / r[2] if r[2] else r[0] * 2.0 for r in raws]
    best_dw = min(dw)
    min_dom = min(r[0] for r in raws)
    max_w = max(r[2] for r in raws) or 1
    max_dd = max(r[1] for r in raws) or 1
    total_w = sum(r[2] for r in raws) or 1
    rank = s.var_rank
    order = sorted(range(k), key=lambda i: (dw[i], rank[cands[i]]))
    pos_of = [0] * k
    for p, i in enumerate(order):
        pos_of[i] = p
    state = list(state_features(s, depth, k))
    n1, km1 = max(1, s.n - 1), max(1, k - 1)
    rows = []
    for i, x in enumerate(cands):
        r = raws[i]
        d, ddeg, wdeg, assigned, pressure, tsum, min_open, jw, pos, neg = r[:10]
        n_nbr = len(s.var_bin[x])
        rows.append([
            log1p(d), d / s.init_size[x], log1p(ddeg), log1p(wdeg), log1p(dw[i]),
            log1p(d / ddeg if ddeg else d * 2.0), s.static_deg[x] / n1, wdeg / total_w,
            dw[i] / best_dw if best_dw > 0 else 1.0, d / min_dom, wdeg / max_w, ddeg / max_dd,
            assigned / n_nbr if n_nbr else 1.0, pressure / ddeg if ddeg else 0.0, tsum / ddeg if ddeg else 0.0,
            1.0 / min_open if min_open else 0.0, jw, abs(pos - neg) / (pos + neg) if pos + neg else 0.0,
            pos_of[i] / km1, *r[10:], *state])
    return np.array(rows, dtype=np.float32).reshape(k, N_INPUT)


def state_features(s: "Solver", depth: int, n_cands: int) -> list[float]:
    dom, n, init = s.dom, s.n, s.init_size
    n_un = 0
    rel = 0.0
    for v in range(n):
        dv = dom[v]
        if dv & (dv - 1):
            n_un += 1
            rel += dv.bit_count() / init[v]
    return [depth / n, 1.0 - n_un / n, rel / n_un if n_un else 0.0, math.log1p(sum(s.weights) - s.n_cons),
            n_cands / n, float(bool(s.clauses)), math.log(n), math.log(max(2, max(init))), math.log1p(s.n_cons)]
