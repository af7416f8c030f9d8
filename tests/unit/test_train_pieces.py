"""Pure pieces of training and evaluation: losses, metrics, calibration, Tune parameter plumbing."""
import numpy as np
import pytest
import torch

from ray_pipeline.config import load_config, validate
from ray_pipeline.evaluate import analysis
from ray_pipeline.train import losses, metrics
from ray_pipeline.tune.stage import apply_params, best_config_dict

from ..conftest import CONFIGS


def test_ranking_metrics_count_any_tied_best_and_regret():
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0], [1.0, 2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    target = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    costs = torch.tensor([[8.0, 2.0, 2.0], [1.0, 4.0, 9.0], [3.0, 1.0, 0.0]])
    s = metrics.ranking_sums(scores, mask, target, costs)
    m = metrics.finish_ranking(s)
    assert m["top1"] == pytest.approx(1 / 3) and m["top3"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert m["log_regret"] == pytest.approx((np.log(4) + np.log(4) + 0) / 3)
    assert m["baseline_top1"] == pytest.approx(1 / 3) and m["baseline_log_regret"] == pytest.approx(
        (np.log(4) + 0 + np.log(3)) / 3)


def test_listwise_and_distillation_losses():
    s = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    ce = losses.listwise_ce(s, mask, t)
    assert ce.item() == pytest.approx(-torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0].item(), rel=1e-5)
    p = losses.teacher_probs([torch.tensor([[2.0, 0.0, 9.0]])], [1.0], mask, 2.0)
    assert p[0, 2].item() == 0.0 and p.sum().item() == pytest.approx(1.0)
    d = losses.distill(s, mask, t, p, alpha=1.0, t=2.0)
    assert d.item() == pytest.approx(0.0, abs=1e-6)  # student == teacher logits: KL is zero
    d.backward()
    assert torch.isfinite(s.grad).all()
    two = losses.teacher_probs([torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])], [3.0, 1.0], mask, 1.0)
    assert two[0, 0] > two[0, 1]  # the heavier teacher dominates


def test_regression_metrics_and_ece():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[1.0, float("nan")], [5.0, 4.0]])
    r = metrics.finish_regression(metrics.regression_sums(pred, y), ("a", "b"))
    assert r["a_mae"] == pytest.approx(1.0) and r["a_rmse"] == pytest.approx(np.sqrt(2.0))
    assert r["b_mae"] == 0.0 and "b_r2" in r
    e, rows = metrics.ece(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1]), bins=10)
    assert e == pytest.approx(0.5 * 0.4 + 0.5 * 0.4) and sum(r["n"] for r in rows) == 4


def test_temperature_scaling_lowers_the_top1_log_loss_and_ece():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 5)).astype(np.float32) * 8  # over-confident
    target = np.zeros((200, 5), np.float32)
    target[np.arange(200), rng.integers(0, 5, 200)] = 1
    t = analysis.fit_temperature(scores, target)
    assert t > 1 and analysis.top1_log_loss(scores, target, t) < analysis.top1_log_loss(scores, target, 1.0)
    before, after = (analysis.calibration(scores, target, x, 10)["ece"] for x in (1.0, t))
    assert after < before / 2  # random labels: the fitted T takes the top probability down towards 1/5


def test_calibration_reports_states_with_one_best_candidate_apart():
    scores = np.array([[2.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
    target = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    c = analysis.calibration(scores, target, 1.0, 10)
    assert c["unique_best_states"] == 2 and c["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    p_top = np.exp(3.0) / (1 + np.exp(1.0) + np.exp(3.0))  # state 3: top pick wrong, confident
    p1 = np.exp(2.0) / (np.exp(2.0) + 2)
    assert c["ece_unique_best"] == pytest.approx((abs(p1 - 1) + abs(p_top - 0)) / 2, abs=1e-4)


def test_binary_losses_ignore_padding_and_reward_every_tied_best_candidate():
    mask = torch.tensor([[True, True, True, False]])
    label = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # two tied-best candidates
    both = torch.tensor([[4.0, 4.0, -4.0, 123.0]])
    one = torch.tensor([[4.0, -4.0, -4.0, -123.0]])
    # padding never counts, and putting both ties high beats picking one of them
    assert losses.binary_ce(both, mask, label) == pytest.approx(float(-np.log(1 / (1 + np.exp(-4.0)))), rel=1e-5)
    assert losses.binary_ce(both, mask, label) < losses.binary_ce(one, mask, label)
    p_t = losses.teacher_probs_binary([both, one], [1.0, 1.0], 1.0)
    assert p_t[0, 1] == pytest.approx(0.5, abs=1e-6)  # the two teachers disagree on candidate 1
    # alpha = 0 is the labels' loss alone; alpha = 1 is lowest where the student matches the teacher's sigmoid
    assert losses.distill_binary(both, mask, label, p_t, 0.0, 2.0) == pytest.approx(float(losses.binary_ce(both, mask, label)))
    kd_self = losses.distill_binary(both, mask, label, torch.sigmoid(both / 2.0), 1.0, 2.0)
    kd_other = losses.distill_binary(one, mask, label, torch.sigmoid(both / 2.0), 1.0, 2.0)
    assert kd_self < kd_other


def test_binary_calibration_reads_the_top_candidates_sigmoid():
    scores = np.array([[2.0, 2.0, -np.inf], [0.0, 1.0, -1.0]], np.float32)
    target = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    c = analysis.calibration(scores, target, 1.0, 10, binary=True)
    s = 1 / (1 + np.exp(-np.array([2.0, 1.0])))  # top candidates' sigmoids; state 1 right (a tie), state 2 wrong
    assert c["scores"] == "binary" and c["accuracy"] == pytest.approx(0.5)
    assert c["ece"] == pytest.approx((abs(s[0] - 1) + abs(s[1] - 0)) / 2, abs=1e-4)
    # a softmax over the same scores gives the tied pair 1/2 each: another confidence for the same event
    assert analysis.calibration(scores, target, 1.0, 10)["reliability"] != c["reliability"]
    rng = np.random.default_rng(0)
    big = rng.normal(size=(300, 5)) * 6  # over-confident sigmoids on random labels
    lab = (rng.random((300, 5)) < 0.3).astype(np.float32)
    t = analysis.fit_temperature(big, lab, binary=True)
    assert t > 1 and analysis.calibration(big, lab, t, 10, True)["ece"] < analysis.calibration(big, lab, 1.0, 10, True)["ece"]


def test_ece_interval_resamples_whole_instances():
    # 40 instances of 25 states each; each instance is easier or harder than the confidence says by its own offset
    # (calibrated on average), so the instance sample moves ECE as a block, which a state-level resample hides
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 25)
    conf = rng.uniform(0.2, 0.8, 1000)
    offset = np.repeat(rng.normal(0, 0.15, 40), 25)
    correct = (rng.random(1000) < np.clip(conf + offset, 0, 1)).astype(float)
    lo, hi = analysis.ece_ci95(conf, correct, groups, 10)
    e = metrics.ece(conf, correct, 10)[0]
    assert lo <= e <= hi and hi - lo > 0.01
    assert analysis.ece_ci95(conf, correct, groups, 10) == [lo, hi]  # fixed seed
    lo_s, hi_s = analysis.ece_ci95(conf, correct, np.arange(1000), 10)  # each state its own group
    assert hi_s - lo_s < hi - lo
    assert analysis.ece_ci95(conf, correct, np.zeros(1000), 10) is None  # one instance: no interval
    scores = np.log(np.stack([conf, 1 - conf], 1))
    target = np.stack([correct, 1 - correct], 1)
    c = analysis.calibration(scores, target, 1.0, 10, groups=groups)
    assert c["ece_ci95"] is not None and analysis.calibration(scores, target, 1.0, 10)["ece_ci95"] is None


def test_tune_params_land_in_the_model_section_and_the_best_config_validates():
    cfg = load_config(CONFIGS / "tune.yaml")
    sec = cfg.train.model_dump(mode="json")["teacher"]
    out = apply_params(sec, {"optim.lr": 0.01, "hidden": 48}, "train.teacher")
    assert out["optim"]["lr"] == 0.01 and out["hidden"] == 48 and sec["hidden"] != 48
    with pytest.raises(KeyError, match="tune.space.optim.nope"):
        apply_params(sec, {"optim.nope": 1}, "train.teacher")
    best = validate(best_config_dict(cfg, "teacher", {"optim.lr": 0.01, "hidden": 32, "dropout": 0.2}))
    assert best.train.teacher.dropout == 0.2 and "train" in best.stages and not best.tune.enabled


def _speedup_ev(node_ratio: float, time_ratio: float, inference_s: float, total_s: float) -> dict:
    rank = {"all": {"top1": 0.7, "baseline_top1": 0.6, "n": 100}}
    learned = {"geomean_node_ratio": node_ratio, "geomean_time_ratio": time_ratio, "model_time_s": inference_s / 2,
               "feature_time_s": inference_s / 2, "total_time_s": total_s, "compared": 8}
    return {"ranking": {"student": {"test": rank}, "teacher": {"test": rank}},
            "speedup": {"summary": {"heldout": {"learned": learned}}}}


def test_time_suggestion_blames_inference_only_when_its_share_explains_the_gap():
    # 20% of the time in features + model calls, 8% gap between time and node ratios: inference explains it
    costly = analysis.suggestions(_speedup_ev(0.95, 1.03, 2.0, 10.0), {}, None)
    assert any("inference overhead explains the gap" in s and "20.0%" in s for s in costly), costly
    # 1% in inference cannot explain a 10% gap: the advice must not be to cut model calls
    cheap = analysis.suggestions(_speedup_ev(0.95, 1.05, 0.1, 10.0), {}, None)
    assert any("too little to explain the gap" in s and "1.0%" in s for s in cheap), cheap
    assert not any("call the model less" in s for s in cheap)


def _row(inst: str, h: str, nodes: int, time_s: float, status: str) -> dict:
    return {"instance": inst, "split": "heldout", "heuristic": h, "nodes": nodes, "time_s": time_s,
            "status": status, "model_calls": 0, "model_time_s": 0.0, "feature_time_s": 0.0}


def test_speedup_summary_gives_bootstrap_intervals_and_splits_by_answer():
    from ray_pipeline.evaluate.speedup import summarize

    rows = []
    for i, (base, mine, status) in enumerate([(100, 50, "UNSAT"), (100, 80, "UNSAT"), (100, 120, "UNSAT"),
                                              (100, 40, "SAT"), (100, 250, "SAT"), (100, 60, "UNKNOWN")]):
        rows += [_row(f"i{i}", "dom-wdeg", base, base / 100, "SAT" if status == "UNKNOWN" else status),
                 _row(f"i{i}", "mine", mine, mine / 50, status)]
    s = summarize(rows, "dom-wdeg")["heldout"]
    mine = s["mine"]
    assert mine["solved"] == 5 and mine["compared"] == 5  # the limit-hit run is not compared
    ratios = [0.5, 0.8, 1.2, 0.4, 2.5]
    assert mine["geomean_node_ratio"] == pytest.approx(np.exp(np.mean(np.log(ratios))), abs=1e-4)
    lo, hi = mine["geomean_node_ratio_ci95"]
    assert min(ratios) <= lo < mine["geomean_node_ratio"] < hi <= max(ratios)
    t_lo, t_hi = mine["geomean_time_ratio_ci95"]  # time ratios are the node ratios x 2
    assert (t_lo, t_hi) == (pytest.approx(2 * lo, abs=2e-4), pytest.approx(2 * hi, abs=2e-4))
    assert mine["by_status"]["UNSAT"]["compared"] == 3 and mine["by_status"]["SAT"]["compared"] == 2
    assert mine["by_status"]["UNSAT"]["geomean_node_ratio"] == pytest.approx((0.5 * 0.8 * 1.2) ** (1 / 3), abs=1e-4)
    assert s["dom-wdeg"]["geomean_node_ratio_ci95"] == [1.0, 1.0]  # against itself: no spread
    assert summarize(rows, "dom-wdeg")["heldout"] == s  # fixed bootstrap seed: same rows, same report
    # without inference: no model time here, so the time ratio itself; a quarter of each learned time in the model
    # and features gives 3/4 of it
    assert mine["geomean_time_ratio_without_inference"] == mine["geomean_time_ratio"]
    for r in rows:
        if r["heuristic"] == "mine":
            r.update(model_time_s=0.2 * r["time_s"], feature_time_s=0.05 * r["time_s"])
    s2 = summarize(rows, "dom-wdeg")["heldout"]["mine"]
    assert s2["geomean_time_ratio"] == mine["geomean_time_ratio"]
    assert s2["geomean_time_ratio_without_inference"] == pytest.approx(0.75 * mine["geomean_time_ratio"], abs=2e-4)
