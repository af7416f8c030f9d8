"""The native core's candidate and state features equal the pure-Python ones they replaced.

On decision states of the golden instances (every family and size; states snapshotted from a dom/wdeg + MAC
trace, weights included): the feature rows the core computes equal tests/reference/py_features.py's to 1e-6,
and the learned heuristic built on them searches the reference's trees (test_native_golden.py).
"""
from __future__ import annotations


import numpy as np
import pytest

from ray_pipeline.features import INPUT_FEATURES, N_INPUT
from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver, compile_instance
from ray_pipeline.solver.schema import CANDIDATE_FEATURES, FEATURE_VERSION, STATE_FEATURES

from ray_pipeline.problems import SIZE_DEFAULTS

from ..golden.make_golden import INDICES, SEED
from ..reference import py_features, py_solver

SOURCES = [(f, s, i, SEED) for f in sorted(SIZE_DEFAULTS) for s in SIZE_DEFAULTS[f] for i in INDICES]


def test_one_schema_for_both_sides():
    from ray_pipeline.solver.core import _native

    assert tuple(_native.feature_names()) == INPUT_FEATURES == CANDIDATE_FEATURES + STATE_FEATURES
    assert len(INPUT_FEATURES) == N_INPUT == len(set(INPUT_FEATURES)) and FEATURE_VERSION == "v2"


@pytest.mark.parametrize("chunk", range(2))
def test_native_features_equal_the_python_reference_on_golden_states(chunk):
    checked = 0
    for fam, size, idx, seed in SOURCES[chunk::8]:  # a quarter of the golden instances: every family and size
        inst = generate(fam, size, idx, seed)
        compiled, ref_compiled = compile_instance(inst), py_solver.compile_instance(inst)
        s = Solver(inst, heuristic="dom-wdeg", propagation="mac", node_limit=400, compiled=compiled)
        s.record_trace(max_records=0, capture=[0, 3, 40])
        s.solve()
        for dec, (dom, weights, depth) in s.trace().snapshots.items():
            nat = Solver(inst, domains=dom, weights=weights, compiled=compiled)
            ref = py_solver.Solver(inst, domains=dom, weights=weights, compiled=ref_compiled)
            cands = nat.unassigned()
            if not cands:
                continue
            assert nat.dom_wdeg_order(cands) == ref.dom_wdeg_order(cands)
            for subset in (nat.dom_wdeg_order(cands)[:8], cands[:40]):
                got = nat.features(subset, depth)
                want = py_features.candidate_features(ref, subset, depth)
                assert got.shape == want.shape == (len(subset), N_INPUT) and got.dtype == np.float32
                bad = np.argwhere(~np.isclose(got, want, rtol=0, atol=1e-6))
                assert not len(bad), (inst.name, dec, [(INPUT_FEATURES[j], got[i, j], want[i, j]) for i, j in bad[:5]])
            checked += 1
    assert checked >= 25
