"""Label noise (bench/labels.py): a state probed again on copies of its instance with the constraints in other
orders. The copy in the same order must give the same costs (domains and weights carried over exactly); other
orders keep every feature and move some costs; the summary's figures follow from the costs."""
import random

import numpy as np
import pytest

from ray_pipeline.bench.labels import noise_summary
from ray_pipeline.cli import main
from ray_pipeline.config import load_config
from ray_pipeline.data import augment, steps
from ray_pipeline.features import candidate_features
from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver, compile_instance

from ..conftest import CONFIGS


@pytest.fixture(scope="module")
def labelled():
    data = load_config(CONFIGS / "quick.yaml", ["data.label.max_depth=0", "data.label.node_budget=3000"]).data
    inst = generate("rb", "medium", 7, 0, {})
    copy = augment.reordered(inst, random.Random(1))
    states, _ = steps.label_instance(inst, steps.trace_instance(inst, data), data, 0, copies=[inst, copy])
    return inst, copy, states


def test_the_same_order_gives_the_same_costs_and_another_order_moves_some(labelled):
    inst, copy, states = labelled
    assert len(states) >= 10
    assert copy.binary != inst.binary and sorted(copy.binary) == sorted(inst.binary)
    for s in states:
        same, other = s["costs_on_copies"]
        assert same == s["costs"], s["state_id"]
        assert len(other) == s["n_cands"] and min(other) >= 1
    assert any(s["costs_on_copies"][1] != s["costs"] for s in states)


def test_a_reordered_copy_shows_the_model_the_same_state(labelled):
    inst, copy, states = labelled
    c0 = compile_instance(inst)
    _, cc, where = steps._copy_target(c0, copy)  # the mapping label_instance uses
    # the last labelled state (weights grown unevenly by then), rebuilt on both: the same candidates and features
    top_k = load_config(CONFIGS / "quick.yaml").data.label.top_k
    last = states[-1]
    replay = Solver(inst, node_limit=last["decision"] + 1, compiled=c0)
    replay.record_trace(max_records=0, capture=[last["decision"]])
    replay.solve()
    dom, weights, depth = replay.trace().snapshots[last["decision"]]
    assert len(set(weights)) > 2  # a wrong mapping would show in dom/wdeg's order and the weighted features
    a = Solver(inst, domains=dom, weights=weights, compiled=c0)
    b = Solver(copy, domains=dom, weights=[weights[j] for j in where], compiled=cc)
    cands = a.dom_wdeg_order(a.unassigned())[:top_k]
    assert b.dom_wdeg_order(b.unassigned())[:top_k] == cands == last["candidates"]
    np.testing.assert_array_equal(candidate_features(a, cands, depth), candidate_features(b, cands, depth))
    np.testing.assert_array_equal(candidate_features(a, cands, depth), np.asarray(last["features"], np.float32))
    # another instance is no reordering of this one
    with pytest.raises(ValueError, match="not a reordering"):
        steps._copy_target(c0, generate("rb", "medium", 8, 0, {}))


def test_noise_summary():
    same = [np.array([[10.0, 20, 40]] * 3), np.array([[30.0, 15, 60]] * 3)]
    r = noise_summary(same)
    assert r["states"] == 2 and r["copies"] == 2 and r["noise_share"] == 0.0
    assert r["one_copy"] == r["mean_of_copies"] == {"log_regret": 0.0, "top1": 1.0}
    assert r["dom_wdeg"] == {"log_regret": round(np.log(2) / 2, 4), "top1": 0.5}
    # the copies disagree with the original: their choice costs log 2 on it
    r = noise_summary([np.array([[20.0, 10], [10, 20], [10, 20]])], budget=15)
    assert r["mean_of_copies"] == {"log_regret": round(np.log(2), 4), "top1": 0.0} and r["noise_share"] > 0.5
    assert r["censored_share"] == 0.5
    # exact: log costs [[0, 0], [2, 0]]: noise = mean(var 2, var 0) = 1; the candidates' means 1 and 0 vary by
    # 0.5 (ddof 1), less noise / rows = 0.5 -> no signal: all noise
    r = noise_summary([np.array([[1.0, 1.0], [np.e ** 2, 1.0]])])
    assert r["noise_share"] == 1.0
    assert noise_summary([np.array([[5.0, 5.0], [5.0, 5.0]])])["noise_share"] is None
    with pytest.raises(ValueError, match="at least one copy"):
        noise_summary([np.array([[1.0, 2.0]])])


def test_clauses_are_refused_by_name(capsys):
    data = load_config(CONFIGS / "quick.yaml").data
    inst = generate("ksat", "small", 0, 0, {})
    with pytest.raises(ValueError, match="binary constraints only"):
        steps.label_instance(inst, steps.trace_instance(inst, data), data, 0, copies=[inst])
    assert main(["bench", "labels", str(CONFIGS / "quick.yaml"), "--family", "ksat", "--size", "small"]) == 2
    assert "--family ksat: clauses are not reordered" in capsys.readouterr().err
