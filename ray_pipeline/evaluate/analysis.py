"""Model evaluation on dataset states (pure: torch + numpy, no Ray).

- correctness checks of a trained scorer (shapes, finiteness, permutation equivariance, determinism, batch
  consistency), each reported by name;
- ranking metrics per family and size; regression metrics of the cost predictor;
- calibration of the scorer's top-1 confidence (ECE, reliability diagram data) and temperature scaling fitted
  on val;
- confidence threshold analysis (accuracy vs coverage);
- error analysis: worst states, error by family/size/depth, and suggestions derived from those numbers.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Optional

import numpy as np
import torch

from ..kinds import deployed, kind_of
from ..train.metrics import ece, finish_ranking, finish_regression, ranking_sums, regression_sums


def scores_of(model: torch.nn.Module, a: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        s = model(torch.from_numpy(a["x"]), torch.from_numpy(a["mask"])).numpy()
    return np.where(a["mask"], s, -np.inf).astype(np.float32)


# ------------------------------------------------------------------------------------------ checks
def checks(model: torch.nn.Module, kind: str, a: dict[str, np.ndarray], seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x, mask = torch.from_numpy(a["x"][:64]), torch.from_numpy(a["mask"][:64])
    out: list[dict[str, Any]] = []

    def add(name: str, passed: bool, detail: str) -> None:
        out.append({"name": name, "passed": bool(passed), "detail": detail})

    with torch.inference_mode():
        s = model(x, mask)
        add("output_shape", tuple(s.shape) == tuple(mask.shape), f"{tuple(s.shape)} for input {tuple(x.shape)}")
        valid = s[mask]
        add("finite_outputs", bool(torch.isfinite(valid).all()), f"{int((~torch.isfinite(valid)).sum())} non-finite")
        add("value_range", bool(valid.abs().max() < 1e4), f"max |score| {float(valid.abs().max()):.3g}")
        perm = torch.from_numpy(np.stack([rng.permutation(x.shape[1]) for _ in range(x.shape[0])]))
        xp = torch.gather(x, 1, perm[..., None].expand_as(x))
        mp = torch.gather(mask, 1, perm)
        sp = model(xp, mp)
        back = torch.gather(s, 1, perm)
        d = float((sp - back)[mp].abs().max())
        add("permutation_equivariance", d < 1e-4, f"max |score(perm x) - perm(score x)| = {d:.2e}")
        s2 = model(x, mask)
        add("determinism", bool(torch.equal(s, s2)), "two identical calls give identical scores")
        one = torch.stack([model(x[i: i + 1], mask[i: i + 1])[0] for i in range(min(8, len(x)))])
        d1 = float((one - s[: len(one)])[mask[: len(one)]].abs().max())
        add("batch_consistency", d1 < 1e-4, f"max |batch of 1 - full batch| = {d1:.2e}")
        if not kind_of(kind).set_input:  # scores candidate rows one by one: the same alone as in a state
            flat = model(x[mask])
            d2 = float((flat - s[mask]).abs().max())
            add("per_candidate_independence", d2 < 1e-5, f"scoring candidates alone vs in states: {d2:.2e}")
    return out


# ------------------------------------------------------------------------------------------ ranking
def ranking_by_group(scores: np.ndarray, a: dict[str, np.ndarray], groups: list[str]) -> dict[str, dict[str, float]]:
    out = {"all": _rank(scores, a, np.ones(len(groups), bool))}
    for g in sorted(set(groups)):
        out[g] = _rank(scores, a, np.array([x == g for x in groups]))
    return out


def _rank(scores: np.ndarray, a: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, float]:
    if not sel.any():
        return {"n": 0}
    r = finish_ranking(ranking_sums(torch.from_numpy(scores[sel]), torch.from_numpy(a["mask"][sel]),
                                    torch.from_numpy(a["target"][sel]), torch.from_numpy(a["costs"][sel])))
    r["n"] = int(sel.sum())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def regression_report(pred: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in finish_regression(regression_sums(torch.from_numpy(pred),
                                                                         torch.from_numpy(y)), names).items()}


# ------------------------------------------------------------------------------------------ calibration
# What a scorer's scores mean (model.json "scores"): "listwise" = logits of a softmax over the state's candidates
# (train.target best/soft), "binary" = each candidate's own logit of being one of the cheapest (train.target
# binary). The event calibrated is the same for both: the top candidate is one of the tied-best. Its confidence is
# the top softmax probability, or the top candidate's sigmoid.
def _probs(scores: np.ndarray, t: float) -> np.ndarray:
    z = scores / t
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.where(np.isfinite(z), np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray, t: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64) / t))


def _top1(scores: np.ndarray, target: np.ndarray, t: float, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, hit) of each state's top candidate at temperature t."""
    top = scores.argmax(axis=1)
    if binary:
        conf = _sigmoid(scores[np.arange(len(scores)), top], t)
    else:
        conf = _probs(scores, t).max(axis=1)
    return conf, target[np.arange(len(scores)), top] > 0


def nll(scores: np.ndarray, target: np.ndarray, t: float, binary: bool = False) -> float:
    """The label's negative log-likelihood: the softmax mass on the tied-best candidates, or (binary) the mean
    per-candidate log loss of "is one of the cheapest"."""
    if binary:
        valid = np.isfinite(scores)
        p = np.clip(_sigmoid(scores[valid], t), 1e-12, 1 - 1e-12)
        y = target[valid] > 0
        return float(-np.where(y, np.log(p), np.log1p(-p)).mean()) if len(p) else 0.0
    p = (_probs(scores, t) * (target > 0)).sum(axis=1)  # probability mass on the tied-best candidates
    return float(-np.log(np.maximum(p, 1e-12)).mean())


def top1_log_loss(scores: np.ndarray, target: np.ndarray, t: float, binary: bool = False) -> float:
    """Log loss of the event the calibration figures are about: confidence = the top candidate's probability,
    outcome = the top candidate is one of the tied-best (the same event ECE bins)."""
    conf, hit = _top1(scores, target, t, binary)
    conf = np.clip(conf, 1e-7, 1 - 1e-7)
    return float(-np.where(hit, np.log(conf), np.log1p(-conf)).mean())


def fit_temperature(scores: np.ndarray, target: np.ndarray, binary: bool = False) -> float:
    """One scalar T > 0 fitted on validation (temperature scaling, Guo et al. 2017): grid in log space, then
    refined. The loss is the log loss of the top-1 event, not the NLL of the label: with tied-best candidates
    (4 in 10 states) a softmax spreads mass over them, so NLL's T (0.18 on a quick run) left test ECE at 0.14
    where this one's (0.15) gives 0.10."""
    if len(scores) == 0:
        return 1.0
    grid = np.exp(np.linspace(math.log(0.02), math.log(50.0), 81))
    best = min(grid, key=lambda t: top1_log_loss(scores, target, t, binary))
    fine = best * np.exp(np.linspace(-0.1, 0.1, 21))
    # T = 1 is a candidate: scaling never makes the validation loss worse than leaving the model alone
    return float(min([*fine, 1.0], key=lambda t: top1_log_loss(scores, target, t, binary)))


def ece_ci95(conf: np.ndarray, correct: np.ndarray, groups: np.ndarray, bins: int, resamples: int = 1000
             ) -> Optional[list[float]]:
    """95% bootstrap interval (fixed seed) of ECE, resampling whole groups (base instances).

    States of one instance share its difficulty, so a test split of ~35 instances moves accuracy by several points
    as a block: on quick's run val ECE was 0.03 and test 0.07 with the same model. Resampling states alone would
    hide that. ECE is biased upwards (noise in a bin's accuracy only adds to |acc - conf|), and more so on a
    resample, so percentiles of the resampled ECEs sit above the estimate; the basic bootstrap interval
    [2 ECE - q97.5, 2 ECE - q2.5] (clipped at 0) takes that shift out."""
    if len(groups) != len(conf):
        raise ValueError(f"{len(groups)} group ids for {len(conf)} states")
    keys, inv = np.unique(groups, return_inverse=True)
    if len(keys) < 2:
        return None
    members = [np.flatnonzero(inv == g) for g in range(len(keys))]
    rng = np.random.default_rng(0)
    es = []
    for _ in range(resamples):
        sel = np.concatenate([members[g] for g in rng.integers(0, len(keys), size=len(keys))])
        es.append(ece(conf[sel], correct[sel], bins)[0])
    e = ece(conf, correct, bins)[0]
    q_lo, q_hi = np.percentile(es, [2.5, 97.5])
    return [round(max(0.0, float(2 * e - q_hi)), 4), round(max(0.0, float(2 * e - q_lo)), 4)]


def calibration(scores: np.ndarray, target: np.ndarray, t: float, bins: int, binary: bool = False,
                groups: Optional[np.ndarray] = None) -> dict[str, Any]:
    """ECE of the top-1 event at temperature t, the reliability diagram's data and confidence thresholds; with
    `groups` (each state's base instance) also ECE's instance-bootstrap interval."""
    conf, hit = _top1(scores, target, t, binary)
    correct = hit.astype(float)
    e, rows = ece(conf, correct, bins)
    # Where one candidate is strictly best the top softmax probability can mean "this one is best"; with ties it
    # cannot (mass split over equals), so ECE is also given on those states alone.
    unique = (target > 0).sum(axis=1) == 1
    e_unique = ece(conf[unique], correct[unique], bins)[0] if unique.any() else None
    thresholds = []
    for th in (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        sel = conf >= th
        thresholds.append({"threshold": th, "coverage": round(float(sel.mean()), 4) if len(sel) else 0.0,
                           "accuracy": round(float(correct[sel].mean()), 4) if sel.any() else None})
    return {"temperature": round(t, 4), "ece": round(e, 4), "nll": round(nll(scores, target, t, binary), 4),
            "scores": "binary" if binary else "listwise",
            "ece_ci95": None if groups is None else ece_ci95(conf, correct, np.asarray(groups), bins),
            "ece_unique_best": None if e_unique is None else round(e_unique, 4),
            "unique_best_states": int(unique.sum()),
            "accuracy": round(float(correct.mean()), 4) if len(correct) else None,
            "mean_confidence": round(float(conf.mean()), 4) if len(conf) else None, "bins": bins,
            "reliability": rows, "thresholds": thresholds}


# ------------------------------------------------------------------------------------------ error analysis
def error_analysis(scores: np.ndarray, a: dict[str, np.ndarray], meta: list[dict[str, Any]], top: int = 10
                   ) -> dict[str, Any]:
    """Regret of the model's choice: cost(chosen) / cost(best) per state, grouped and ranked."""
    pick = np.argmax(scores, axis=1)
    n = np.arange(len(pick))
    best_cost = np.where(a["mask"], a["costs"], np.inf).min(axis=1)
    chosen = a["costs"][n, pick]
    ratio = chosen / np.maximum(best_cost, 1.0)
    base_ratio = a["costs"][:, 0] / np.maximum(best_cost, 1.0)
    miss = a["target"][n, pick] <= 0
    worst = np.argsort(-ratio, kind="stable")[:top]
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, m in enumerate(meta):
        d = m["depth"]
        bucket = "0-2" if d <= 2 else "3-5" if d <= 5 else "6-10" if d <= 10 else ">10"
        for key in (f"family/size={m['family']}/{m['size']}", f"depth={bucket}"):
            groups[key]["miss"].append(float(miss[i]))
            groups[key]["log_regret"].append(float(np.log(ratio[i])))
            groups[key]["log_regret_dom_wdeg"].append(float(np.log(base_ratio[i])))
    by_group = {k: {"n": len(v["miss"]), "miss_rate": round(float(np.mean(v["miss"])), 4),
                    "mean_log_regret": round(float(np.mean(v["log_regret"])), 4),
                    "mean_log_regret_dom_wdeg": round(float(np.mean(v["log_regret_dom_wdeg"])), 4)}
                for k, v in sorted(groups.items())}
    return {
        "states": int(len(pick)), "miss_rate": round(float(miss.mean()), 4) if len(miss) else None,
        "mean_log_regret": round(float(np.log(ratio).mean()), 4) if len(ratio) else None,
        "mean_log_regret_dom_wdeg": round(float(np.log(base_ratio).mean()), 4) if len(ratio) else None,
        "worst": [{"state_id": meta[i]["state_id"], "family": meta[i]["family"], "size": meta[i]["size"],
                   "depth": meta[i]["depth"], "chosen_cost": float(chosen[i]), "best_cost": float(best_cost[i]),
                   "dom_wdeg_cost": float(a["costs"][i, 0]), "regret_ratio": round(float(ratio[i]), 3)}
                  for i in worst],
        "by_group": by_group,
    }


def suggestions(ev: dict[str, Any], train_counts: dict[str, int], train_top1: float | None) -> list[str]:
    """Concrete next steps, each grounded in a number from this evaluation."""
    out = []
    d = deployed()  # the model the solver calls, and the one it is compared to
    st = ev["ranking"][d.name]["test"]["all"]
    te = ev["ranking"][d.compare_to]["test"]["all"]
    overall = st.get("top1", 0.0)
    base = st.get("baseline_top1", 0.0)
    if overall <= base + 0.01:
        out.append(f"The {d.name}'s test top-1 ({overall:.3f}) is not above dom/wdeg's ({base:.3f}): the features do "
                   f"not yet separate candidates better than dom/wdeg does; add richer candidate features "
                   f"(look-ahead pruning counts) or label more states (data.label.states_per_instance).")
    if te.get("top1", 0) - overall > 0.05:
        out.append(f"{d.name.capitalize()} top-1 {overall:.3f} trails the {d.compare_to}'s {te['top1']:.3f} by more "
                   f"than 5 points: widen the {d.name} (train.{d.name}.hidden) or raise distill.alpha.")
    if train_top1 is not None and train_top1 - overall > 0.1:
        out.append(f"Validation-best top-1 {train_top1:.3f} vs test {overall:.3f}: overfitting; raise dropout / "
                   f"weight decay or add data.")
    med = float(np.median(list(train_counts.values()))) if train_counts else 0.0
    for g, r in ev["ranking"][d.name]["test"].items():
        if g == "all" or r.get("n", 0) < 5:
            continue
        if r["top1"] < overall - 0.1:
            n_train = train_counts.get(g, 0)
            more = " (fewer training states than the median group: add data there)" if n_train < med else ""
            out.append(f"{g}: top-1 {r['top1']:.3f} is more than 10 points below the overall {overall:.3f}, "
                       f"with {n_train} training states{more}.")
    held = ev["ranking"][d.name].get("heldout", {}).get("all", {})
    if held.get("n", 0) >= 5 and held.get("top1", 1.0) < overall - 0.1:
        out.append(f"Held-out (larger sizes) top-1 {held['top1']:.3f} vs test {overall:.3f}: a generalisation gap; "
                   f"add larger instances to the training families.")
    sp = ev.get("speedup", {}).get("summary", {})
    for split, s in sp.items():
        r = s.get("learned")
        if r and r.get("geomean_time_ratio") and r.get("geomean_node_ratio"):
            if r["geomean_node_ratio"] < 1 <= r["geomean_time_ratio"]:
                # Blame inference only when its measured share can account for the gap between the two ratios.
                share = (r["model_time_s"] + r["feature_time_s"]) / r["total_time_s"] if r["total_time_s"] else 0.0
                gap = r["geomean_time_ratio"] / r["geomean_node_ratio"] - 1.0
                head = (f"{split}: fewer nodes (x{r['geomean_node_ratio']:.2f}) but more time "
                        f"(x{r['geomean_time_ratio']:.2f}) than dom/wdeg; features + model calls are "
                        f"{100 * share:.1f}% of the learned runs' time")
                if share >= 0.5 * gap:
                    out.append(f"{head}: inference overhead explains the gap; call the model less "
                               f"(evaluate.learned.max_depth, top_k) or make features cheaper.")
                else:
                    out.append(f"{head}, too little to explain the gap: the learned search trees cost more per node "
                               f"(propagation), or the time ratio is noise over {r['compared']} instances; add "
                               f"instances before changing the model's budget.")
    if not out:
        out.append("No group stands out: the next gains are likely from more labelled states overall.")
    return out
