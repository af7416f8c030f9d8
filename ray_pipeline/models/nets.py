"""The three models. Normalisation (train-split mean/std) is a buffer inside each model, so checkpoints and
exported ONNX files take raw features.

- TeacherScorer: per-candidate embedding, then self-attention blocks over the candidates of a state (no
  positional encoding: permutation-equivariant), one score per candidate. Input [B, K, F] + mask [B, K].
- StudentScorer: a small MLP applied to each candidate alone: cheap enough to call inside the search.
  Input [..., F] -> [...]; exported to ONNX as [N, F] -> [N].
- CostPredictor: instance features -> (log1p nodes, log seconds) of the baseline solver.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    CLIP = 8.0

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clipped: a feature far outside the train range (larger held-out sizes) cannot dominate, and INT8
        # activation ranges stay tight
        return ((x - self.mean) / self.std).clamp(-self.CLIP, self.CLIP)


def mlp(n_in: int, hidden: int, layers: int, n_out: int, dropout: float = 0.0) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = n_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        d = hidden
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * hidden, hidden))

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        a = self.ln1(h)
        h = h + self.attn(a, a, a, key_padding_mask=pad, need_weights=False)[0]
        return h + self.ff(self.ln2(h))


class TeacherScorer(nn.Module):
    def __init__(self, n_in: int, hidden: int, layers: int, heads: int, dropout: float,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.embed = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        h = self.embed(self.norm(x))
        for blk in self.blocks:
            h = blk(h, ~mask)
        return self.head(h).squeeze(-1)


class StudentScorer(nn.Module):
    def __init__(self, n_in: int, hidden: int, layers: int, dropout: float, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.net = mlp(n_in, hidden, layers, 1, dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(self.norm(x)).squeeze(-1)


class CostPredictor(nn.Module):
    def __init__(self, n_in: int, hidden: int, layers: int, dropout: float, mean: Sequence[float],
                 std: Sequence[float], n_out: int = 2):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.net = mlp(n_in, hidden, layers, n_out, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
