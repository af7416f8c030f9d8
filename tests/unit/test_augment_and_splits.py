"""Augmentation invariance and the pure purify/split helpers."""
import random

import numpy as np
import pyarrow as pa
import pytest

from ray_pipeline.data import augment, steps
from ray_pipeline.data.dataset import to_arrays
from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver, solve
from ray_pipeline.features import N_INPUT


class Choices:
    def __init__(self):
        self.chosen = []

    def on_decision(self, s, depth, x):
        self.chosen.append(x)

    def on_outcome(self, *a):
        pass


@pytest.mark.parametrize("family", ["rb", "ksat", "coloring", "nqueens", "sudoku"])
def test_symmetry_preserves_satisfiability_and_the_search_under_renaming(family):
    for i in range(6):
        inst = generate(family, "small", i, 3)
        rng = random.Random(i)
        sym = augment.random_symmetry(inst, rng)
        t = augment.apply(inst, sym, rng)
        var_rank, val_rank = augment.tie_ranks(sym)
        for h, prop in (("mrv", "mac"), ("dom-deg", "fc"), ("lex", "mac")):
            a, b = Choices(), Choices()
            ra = Solver(inst, heuristic=h, propagation=prop, tracer=a).solve()
            rb = Solver(t, heuristic=h, propagation=prop, tracer=b, var_rank=var_rank, val_rank=val_rank).solve()
            assert ra.status == rb.status
            assert ra.stats.nodes == rb.stats.nodes
            assert [sym.var_perm[x] for x in a.chosen] == b.chosen  # same search, renamed
            if rb.status == "SAT":
                assert t.is_solution(rb.assignment)
        # weighted heuristics may break ties differently, but the answer is the same
        assert solve(inst).status == solve(t).status
        if "planted" in inst.meta:
            assert t.is_solution(t.meta["planted"])


def test_splits_are_by_instance_and_stratified():
    ids = [(f"{f}-{z}-{i}", f, z) for f in ("rb", "ksat") for z in ("small", "medium") for i in range(20)]
    split = steps.assign_splits(ids, (0.7, 0.15, 0.15), seed=0)
    assert set(split) == {b for b, _, _ in ids}
    for f in ("rb", "ksat"):
        for z in ("small", "medium"):
            got = [split[b] for b, ff, zz in ids if (ff, zz) == (f, z)]
            assert got.count("val") == 3 and got.count("test") == 3 and got.count("train") == 14
    assert split == steps.assign_splits(list(reversed(ids)), (0.7, 0.15, 0.15), seed=0)  # order-free
    assert split != steps.assign_splits(ids, (0.7, 0.15, 0.15), seed=1)


def test_balance_caps_and_informative_states():
    caps = steps.balance_caps({("a", "s"): 10, ("b", "s"): 40, ("c", "s"): 500}, 3.0)
    assert caps == {("a", "s"): 10, ("b", "s"): 40, ("c", "s"): 120}  # 3 x the median group (40)
    assert not steps.is_informative([5.0, 5.0], [False, False], 2)
    assert not steps.is_informative([9.0, 9.0], [True, True], 2)
    assert not steps.is_informative([1.0], [False], 2)
    assert steps.is_informative([3.0, 9.0], [False, True], 2)


def test_to_arrays_pads_and_spreads_the_target_over_ties():
    f = lambda k: [[float(j)] * N_INPUT for j in range(k)]  # noqa: E731
    t = pa.table({"n_cands": [3, 2], "features": [f(3), f(2)], "costs": [[4.0, 1.0, 1.0], [2.0, 7.0]]})
    a = to_arrays(t, k_max=4)
    assert a["x"].shape == (2, 4, N_INPUT) and a["mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert np.allclose(a["target"][0], [0, 0.5, 0.5, 0]) and a["best"].tolist() == [1, 0]
    assert a["x"][0, 2, 0] == 2.0 and a["x"][0, 3].sum() == 0
    b = to_arrays(t.to_pydict(), k_max=4)  # the dict path (Ray Data numpy batches) agrees
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_specs_cover_every_family_size_copy_and_heldout():
    from ray_pipeline.config import load_config

    from ..conftest import CONFIGS
    cfg = load_config(CONFIGS / "quick.yaml")
    specs = steps.instance_specs(cfg.data, 0)
    expected = sum(fs.count * len(fs.sizes) for fs in cfg.data.generate.families) * cfg.data.augment.factor + sum(
        fs.count * len(fs.sizes) for fs in cfg.data.generate.heldout)
    assert len(specs) == expected == len({s["instance_id"] for s in specs})
    assert [s["ordinal"] for s in specs] == list(range(len(specs)))
    assert {s["heldout"] for s in specs} == {True, False}
