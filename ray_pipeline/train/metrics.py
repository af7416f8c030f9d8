"""Metrics as sums, so workers can all-reduce them and the driver can divide once (pure torch/numpy)."""
from __future__ import annotations

import math

import numpy as np
import torch


def ranking_sums(scores: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                 costs: torch.Tensor | None = None) -> dict[str, float]:
    """top-1 / top-3 / top-5 / MRR where any of the tied-best candidates counts as correct; with probe costs
    also the log regret log(cost(chosen) / cost(best)) of the model and of dom/wdeg's choice (candidate 0)."""
    s = scores.detach().float().masked_fill(~mask, float("-inf"))
    best = target > 0
    order = torch.argsort(s, dim=-1, descending=True)
    hit = torch.gather(best, 1, order) & torch.gather(mask, 1, order)
    first = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(hit[:, 0], hit.shape[1], dtype=torch.long))
    rank = first.float() + 1
    out = {"n": float(len(s)), "top1": float((rank <= 1).sum()), "top3": float((rank <= 3).sum()),
           "top5": float((rank <= 5).sum()), "mrr": float((1.0 / rank).sum()),
           "baseline_top1": float(best[:, 0].sum())}  # candidate 0 = dom/wdeg's choice
    if costs is not None:
        c = costs.detach().double().clamp(min=1.0)
        cmin = c.masked_fill(~mask, float("inf")).min(dim=1).values
        pick = s.argmax(dim=1)
        out["log_regret"] = float(torch.log(c.gather(1, pick[:, None]).squeeze(1) / cmin).sum())
        out["baseline_log_regret"] = float(torch.log(c[:, 0] / cmin).sum())
    return out


def finish_ranking(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
    n = max(sums.get("n", 0.0), 1.0)
    return {f"{prefix}{k}": sums[k] / n for k in ("top1", "top3", "top5", "mrr", "baseline_top1", "log_regret",
                                                    "baseline_log_regret") if k in sums}


def regression_sums(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per target column j: sums for MAE, RMSE, R^2, MAPE (on the log targets)."""
    out: dict[str, float] = {}
    p, t = pred.detach().double(), y.detach().double()
    for j in range(t.shape[1]):
        ok = torch.isfinite(t[:, j])
        pj, tj = p[ok, j], t[ok, j]
        err = pj - tj
        out.update({f"n{j}": float(ok.sum()), f"ae{j}": float(err.abs().sum()), f"se{j}": float((err ** 2).sum()),
                    f"y{j}": float(tj.sum()), f"yy{j}": float((tj ** 2).sum()),
                    f"ape{j}": float((err.abs() / tj.abs().clamp(min=1e-3)).sum())})
    return out


def finish_regression(sums: dict[str, float], names: tuple[str, ...], prefix: str = "") -> dict[str, float]:
    out = {}
    for j, name in enumerate(names):
        n = sums.get(f"n{j}", 0.0)
        if n < 1:
            continue
        mean = sums[f"y{j}"] / n
        ss_tot = sums[f"yy{j}"] - n * mean * mean
        out[f"{prefix}{name}_mae"] = sums[f"ae{j}"] / n
        out[f"{prefix}{name}_rmse"] = math.sqrt(sums[f"se{j}"] / n)
        out[f"{prefix}{name}_r2"] = 1.0 - sums[f"se{j}"] / ss_tot if ss_tot > 1e-12 else 0.0
        out[f"{prefix}{name}_mape"] = sums[f"ape{j}"] / n
    return out


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width confidence bins (Guo et al. 2017), and the diagram data."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total, rows = 0.0, []
    n = max(len(confidence), 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if not sel.any():
            rows.append({"lo": float(lo), "hi": float(hi), "n": 0, "conf": 0.0, "acc": 0.0})
            continue
        conf, acc = float(confidence[sel].mean()), float(correct[sel].mean())
        total += sel.sum() / n * abs(acc - conf)
        rows.append({"lo": float(lo), "hi": float(hi), "n": int(sel.sum()), "conf": conf, "acc": acc})
    return float(total), rows
