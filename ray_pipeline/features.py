"""Features: what the dataset pipeline, the models and the solver's learned heuristic share.

Three vectors, each with a fixed name list:
- candidate features: one row per candidate variable at a decision,
- state features: the search state at that decision (appended to every candidate row for the models),
- instance features: a whole instance, for the cost predictor.
Candidate and state features are computed by the native core (ray_pipeline/solver/native); their names,
order and version come from its schema (solver/schema.py reads native/features.def). Instance features are
computed here. Counts are log1p-compressed; centring/scaling is learned from the train split and embedded in
the models. Change anything -> bump FEATURE_VERSION (datasets and checkpoints record it and refuse a mismatch).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .solver.schema import CANDIDATE_FEATURES, FEATURE_VERSION, STATE_FEATURES  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from .problems.instance import Instance
    from .solver.core import Solver

INPUT_FEATURES = CANDIDATE_FEATURES + STATE_FEATURES  # what the scorer models see per candidate
INSTANCE_FEATURES = (
    "log_n", "log_max_dom", "mean_dom_rel", "log_n_binary", "log_n_clauses", "density", "mean_deg_rel",
    "max_deg_rel", "std_deg_rel", "mean_tightness", "max_tightness", "clause_ratio", "mean_clause_len",
    "fixed_frac", "log_space_per_var", "kappa", "is_clausal", "log_edges_per_var",
)
N_CAND, N_STATE, N_INPUT, N_INSTANCE = len(CANDIDATE_FEATURES), len(STATE_FEATURES), len(INPUT_FEATURES), len(INSTANCE_FEATURES)


def candidate_features(s: "Solver", cands: list[int], depth: int) -> np.ndarray:
    """[len(cands), N_INPUT] float32: candidate features followed by the state features, computed by the
    native core from the solver's current state (the same rows the learned heuristic scores)."""
    return s.features(cands, depth)


def instance_features(inst: "Instance") -> np.ndarray:
    """[N_INSTANCE] float32 description of a whole instance (cost predictor input)."""
    from .solver import compile_instance

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
