"""The three models. Normalisation (train-split mean/std) is a buffer inside each model, so checkpoints and
exported ONNX files take raw features.

- TeacherScorer: per-candidate embedding, then self-attention blocks over the candidates of a state (no
  positional encoding: permutation-equivariant), one score per candidate. Input [B, K, F] + mask [B, K].
- StudentScorer: a small MLP applied to each candidate alone: cheap enough to call inside the search.
  Input [..., F] -> [...]; exported to ONNX as [N, F] -> [N].
- CostPredictor: instance features -> (log1p nodes, log seconds) of the baseline solver.
- GraphScorer (optional): the teacher's input plus the state's constraint graph, message passing over it.
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


class _Round(nn.Module):
    """One round of message passing on a dense graph: the message i -> j is relu(A h_i + B h_j + C e_ij) (each
    term computed once per node or edge, not per pair of concatenated vectors); node j takes the mean and the max
    of its incoming messages, then a residual update."""

    def __init__(self, hidden: int, n_edge: int, dropout: float):
        super().__init__()
        self.src, self.dst, self.edge = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False), \
            nn.Linear(n_edge, hidden, bias=False)
        self.update = mlp(3 * hidden, hidden, 1, hidden, dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        m = torch.relu(self.src(h).unsqueeze(2) + self.dst(h).unsqueeze(1) + self.edge(edges))  # [B, src, dst, H]
        a = adj.unsqueeze(-1)
        m = m * a  # messages >= 0: a masked one is 0, so the max over sources needs no -inf
        mean = m.sum(1) / a.sum(1).clamp(min=1.0)
        return self.norm(h + self.update(torch.cat([h, mean, m.amax(1)], -1)))


class GraphScorer(nn.Module):
    """Candidates scored from their node in the state's constraint graph (ray_pipeline.graph) after `rounds` of
    message passing, and from their own feature rows (normalised, and relative to the state's mean row).
    Inputs: x [B, K, F] + mask [B, K] as the teacher's, nodes [B, N, F_node], edges [B, N, N, F_edge],
    adj [B, N, N] (0/1), cand [B, K] (each candidate's node; anything for padded candidates)."""

    def __init__(self, n_in: int, n_node: int, n_edge: int, hidden: int, rounds: int, dropout: float,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.embed = mlp(n_node, hidden, 1, hidden)
        self.rounds = nn.ModuleList(_Round(hidden, n_edge, dropout) for _ in range(rounds))
        self.head = mlp(hidden + 2 * n_in, 64, 2, 1, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, nodes: torch.Tensor, edges: torch.Tensor,
                adj: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        h = self.embed(nodes)
        for r in self.rounds:
            h = r(h, edges, adj)
        at = cand.long().clamp(min=0).unsqueeze(-1).expand(-1, -1, h.shape[-1])
        hc = torch.gather(h, 1, at)  # [B, K, H]
        xn = self.norm(x)
        m = mask.unsqueeze(-1).to(xn.dtype)
        rel = xn - (xn * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(torch.cat([hc, xn, rel], -1)).squeeze(-1)


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
