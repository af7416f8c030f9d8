"""Problem generators: pure, deterministic per (base seed, family, size, index).

Each family has per-size defaults (the one table below) that `params` overrides. The random source is
`random.Random(seed)`, whose sequence is fixed across platforms and Python versions.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Optional

from .instance import Instance, derive_seed
from .readers import coloring_instance

# family -> size -> default parameters. Difficulty knobs are documented on each generator. A family need not
# have every size of config.SIZES (the config refuses a size its family lacks): `xxlarge` exists for Model RB
# only, n=50 near the threshold, a held-out size larger than any the shipped configs train on (issue 15).
SIZE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "nqueens": {"small": {"n": 8}, "medium": {"n": 12}, "large": {"n": 16}, "xlarge": {"n": 24}},
    "coloring": {"small": {"n": 25}, "medium": {"n": 40}, "large": {"n": 60}, "xlarge": {"n": 90}},
    "sudoku": {"small": {"clues": 38}, "medium": {"clues": 30}, "large": {"clues": 26}, "xlarge": {"clues": 23}},
    "rb": {"small": {"n": 20}, "medium": {"n": 30}, "large": {"n": 35}, "xlarge": {"n": 40}, "xxlarge": {"n": 50}},
    "ksat": {"small": {"n": 30}, "medium": {"n": 50}, "large": {"n": 75}, "xlarge": {"n": 100}},
}
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "nqueens": {"prefill": 0.15},
    "coloring": {"k": 3, "avg_degree": 4.4, "planted": False},
    "sudoku": {"box": 3, "unique": True},
    "rb": {"alpha": 0.7, "r": 3.0, "p": None, "forced": False},
    "ksat": {"k": 3, "ratio": 4.26},
}


def params_for(family: str, size: str, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    if family not in SIZE_DEFAULTS:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(SIZE_DEFAULTS)}")
    if size not in SIZE_DEFAULTS[family]:
        raise ValueError(f"unknown size {size!r} for {family}; choose from {sorted(SIZE_DEFAULTS[family])}")
    p = dict(FAMILY_DEFAULTS[family], **SIZE_DEFAULTS[family][size])
    unknown = set(overrides or {}) - set(p)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {family}; known: {sorted(p)}")
    p.update(overrides or {})
    return p


def generate(family: str, size: str, index: int, base_seed: int, overrides: Optional[dict[str, Any]] = None) -> Instance:
    params = params_for(family, size, overrides)
    seed = derive_seed(base_seed, family, size, index)
    inst = GENERATORS[family](params, random.Random(seed))
    inst.name = f"{family}-{size}-{index:05d}"
    inst.family, inst.size, inst.seed = family, size, seed
    inst.params = {k: v for k, v in params.items()}
    return inst.check(inst.name)


# ------------------------------------------------------------------------------------------ families
def nqueens(p: dict[str, Any], rng: random.Random) -> Instance:
    """N-Queens completion: n queens, one per row (variable = row, value = column); `prefill` of the rows
    get a queen at a random non-attacking column first (n-queens completion is NP-complete; may be UNSAT)."""
    n = int(p["n"])
    full = (1 << n) - 1
    binary = []
    for x in range(n):
        for y in range(x + 1, n):
            dist = y - x
            sup = tuple(full & ~((1 << a) | (1 << (a + dist) if a + dist < n else 0) | (1 << (a - dist) if a >= dist else 0))
                        for a in range(n))
            binary.append((x, y, sup))
    domains = [full] * n
    rows = list(range(n))
    rng.shuffle(rows)
    placed: dict[int, int] = {}
    for row in rows[: int(round(p["prefill"] * n))]:
        free = [c for c in range(n) if all(c != pc and abs(c - pc) != abs(row - pr) for pr, pc in placed.items())]
        if not free:
            break
        placed[row] = rng.choice(free)
        domains[row] = 1 << placed[row]
    return Instance("", "nqueens", "", 0, domains=domains, binary=binary, meta={"prefilled": len(placed)})


def coloring(p: dict[str, Any], rng: random.Random) -> Instance:
    """Random graph colouring: n vertices, round(avg_degree*n/2) distinct uniform edges, k colours.
    `planted`: hide a colouring and draw edges only between differently coloured vertices (always SAT).
    3-colouring is hardest near average degree 4.69."""
    n, k = int(p["n"]), int(p["k"])
    m = min(int(round(p["avg_degree"] * n / 2)), n * (n - 1) // 2)
    hidden = [rng.randrange(k) for _ in range(n)] if p["planted"] else None
    edges: set[tuple[int, int]] = set()
    while len(edges) < m:
        u, v = rng.sample(range(n), 2)
        if hidden is not None and hidden[u] == hidden[v]:
            continue
        edges.add((min(u, v), max(u, v)))
    inst = coloring_instance("", n, sorted(edges), k, family="coloring", size="", seed=0)
    if hidden is not None:
        inst.meta["planted"] = hidden
    return inst


def sudoku(p: dict[str, Any], rng: random.Random) -> Instance:
    """Sudoku with `box`x`box` boxes and `clues` givens: a random full grid (pattern + validity-preserving
    shuffles), then clues removed at random; with `unique`, a clue is removed only if one solution remains."""
    b = int(p["box"])
    side = b * b
    clues = int(p["clues"])
    if not 0 < clues <= side * side:
        raise ValueError(f"sudoku clues must be in 1..{side * side}, got {clues}")
    grid = _random_full_grid(b, rng)
    full = (1 << side) - 1
    neq = tuple(full & ~(1 << a) for a in range(side))
    binary = []
    for cell in range(side * side):
        r, c = divmod(cell, side)
        for other in range(cell + 1, side * side):
            r2, c2 = divmod(other, side)
            if r == r2 or c == c2 or (r // b == r2 // b and c // b == c2 // b):
                binary.append((cell, other, neq))
    cells = list(range(side * side))
    rng.shuffle(cells)
    given = set(cells)
    domains = [1 << grid[c] for c in range(side * side)]
    inst = Instance("", "sudoku", "", 0, domains=domains, binary=binary, meta={"solution": grid})
    for cell in cells:
        if len(given) <= clues:
            break
        domains[cell] = full
        if p["unique"] and _count_solutions(inst, limit=2) != 1:
            domains[cell] = 1 << grid[cell]
            continue
        given.discard(cell)
    inst.meta["clues"] = len(given)
    return inst


def _random_full_grid(b: int, rng: random.Random) -> list[int]:
    side = b * b
    base = [[(b * (r % b) + r // b + c) % side for c in range(side)] for r in range(side)]
    digits = list(range(side))
    rng.shuffle(digits)
    bands = list(range(b))
    rng.shuffle(bands)
    rows = [band * b + r for band in bands for r in rng.sample(range(b), b)]
    stacks = list(range(b))
    rng.shuffle(stacks)
    cols = [st * b + c for st in stacks for c in rng.sample(range(b), b)]
    grid = [[digits[base[r][c]] for c in cols] for r in rows]
    if rng.random() < 0.5:
        grid = [list(col) for col in zip(*grid)]
    return [v for row in grid for v in row]


def _count_solutions(inst: Instance, limit: int) -> int:
    from ..solver import count_solutions

    return count_solutions(inst, limit=limit)


def rb(p: dict[str, Any], rng: random.Random) -> Instance:
    """Model RB (Xu & Li 2000), binary: n variables, d = round(n^alpha) values, m = round(r*n*ln n) constraints
    on random pairs, each forbidding round(p*d^2) random tuples. Default p is the threshold 1 - e^(-alpha/r).
    `forced`: plant a random assignment and never forbid its tuples (forced satisfiable)."""
    n, alpha, r = int(p["n"]), float(p["alpha"]), float(p["r"])
    pt = float(p["p"]) if p.get("p") is not None else 1.0 - math.exp(-alpha / r)
    d = max(2, int(round(n ** alpha)))
    m = int(round(r * n * math.log(n)))
    n_forbid = int(round(pt * d * d))
    hidden = [rng.randrange(d) for _ in range(n)] if p["forced"] else None
    full = (1 << d) - 1
    binary = []
    for _ in range(m):
        x, y = rng.sample(range(n), 2)
        tuples = [(a, b) for a in range(d) for b in range(d)]
        if hidden is not None:
            tuples.remove((hidden[x], hidden[y]))
        sup = [full] * d
        for a, b_ in rng.sample(tuples, min(n_forbid, len(tuples))):
            sup[a] &= ~(1 << b_)
        binary.append((x, y, tuple(sup)))
    inst = Instance("", "rb", "", 0, domains=[full] * n, binary=binary, meta={"d": d, "m": m, "p": pt})
    if hidden is not None:
        inst.meta["planted"] = hidden
    return inst


def ksat(p: dict[str, Any], rng: random.Random) -> Instance:
    """Uniform random k-SAT: n variables, round(ratio*n) clauses of k distinct variables with random signs.
    3-SAT is hardest near ratio 4.26."""
    n, k = int(p["n"]), int(p["k"])
    if k > n:
        raise ValueError(f"ksat needs k <= n, got k={k}, n={n}")
    m = int(round(float(p["ratio"]) * n))
    clauses = [tuple((v, rng.randrange(2)) for v in rng.sample(range(n), k)) for _ in range(m)]
    return Instance("", "ksat", "", 0, domains=[0b11] * n, clauses=clauses, meta={"m": m})


GENERATORS: dict[str, Callable[[dict[str, Any], random.Random], Instance]] = {
    "nqueens": nqueens, "coloring": coloring, "sudoku": sudoku, "rb": rb, "ksat": ksat,
}
