"""Losses (pure torch, no Ray)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = -1e9  # masked logit: finite, so 0 * logit stays 0 in KL/CE


def masked_logits(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.float().masked_fill(~mask, NEG)


def smooth(target: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing over the valid candidates only."""
    if eps <= 0:
        return target
    k = mask.sum(-1, keepdim=True).clamp(min=1)
    return (1 - eps) * target + eps * mask.float() / k


def listwise_ce(scores: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy over the candidates of each state against a target distribution."""
    logp = F.log_softmax(masked_logits(scores, mask), dim=-1)
    return -(smooth(target, mask, eps) * logp).sum(-1).mean()


def teacher_probs(teacher_logits: list[torch.Tensor], weights: list[float], mask: torch.Tensor, t: float
                  ) -> torch.Tensor:
    """Several teachers: weighted mean of their temperature-softened probabilities."""
    total = sum(weights)
    p = sum(w * F.softmax(masked_logits(z, mask) / t, dim=-1) for z, w in zip(teacher_logits, weights))
    return p / total


def distill(scores: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, p_teacher: torch.Tensor, alpha: float,
            t: float, eps: float = 0.0) -> torch.Tensor:
    """alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(probe labels) (Hinton et al. 2015)."""
    logq = F.log_softmax(masked_logits(scores, mask) / t, dim=-1)
    kl = F.kl_div(logq, p_teacher, reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * listwise_ce(scores, mask, target, eps)


# ---- binary scores (train.target binary): each candidate's own logit of being one of the cheapest. A softmax
# splits its mass over tied-best candidates (4 states in 10), so its top probability cannot say "this pick is a
# best one"; a per-candidate sigmoid can, and is what calibration reads for these models.
def binary_ce(scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Mean log loss of "is one of the cheapest" over the valid candidates; `eps` smooths towards 1/2."""
    y = label.float() * (1 - eps) + 0.5 * eps
    return F.binary_cross_entropy_with_logits(scores.float()[mask], y[mask])


def teacher_probs_binary(teacher_logits: list[torch.Tensor], weights: list[float], t: float) -> torch.Tensor:
    """Several binary teachers: weighted mean of their temperature-softened sigmoids."""
    return sum(w * torch.sigmoid(z.float() / t) for z, w in zip(teacher_logits, weights)) / sum(weights)


def distill_binary(scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, p_teacher: torch.Tensor,
                   alpha: float, t: float, eps: float = 0.0) -> torch.Tensor:
    """alpha * T^2 * (log loss of the student's softened sigmoid against the teacher's) + (1 - alpha) * the
    labels' log loss: `distill` with one Bernoulli per candidate in place of one softmax per state."""
    kd = F.binary_cross_entropy_with_logits(scores.float()[mask] / t, p_teacher[mask])
    return alpha * t * t * kd + (1 - alpha) * binary_ce(scores, mask, label, eps)


def regression(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Huber on log targets; NaN targets (no timing) are ignored."""
    ok = torch.isfinite(y)
    if not ok.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred[ok], y[ok])
