"""Symmetry-preserving transforms of instances (pure).

A transform renames variables (permutation pi: old v -> new pi[v]) and values (per variable, sigma[v]: old
value a -> new value sigma[v][a]), and shuffles the order of constraints and of literals in clauses. The
result is isomorphic to the input: same satisfiability, and a solver whose tie-breaking follows the
renaming (`var_rank`, `val_rank` from `tie_ranks`) makes the same search up to the renaming. For SAT, value
renaming of a boolean variable is a polarity flip.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..problems.instance import Instance


@dataclass(frozen=True)
class Symmetry:
    var_perm: list[int]  # old var -> new var
    val_perm: list[list[int]]  # per OLD var: old value -> new value


def _map_mask(mask: int, perm: list[int]) -> int:
    out = 0
    while mask:
        low = mask & -mask
        a = low.bit_length() - 1
        out |= 1 << perm[a]
        mask ^= low
    return out


def value_widths(inst: Instance) -> list[int]:
    """Per variable, the number of value slots any part of the instance refers to (domains can be narrower
    than the support tables, e.g. a pre-placed queen)."""
    width = [d.bit_length() for d in inst.domains]
    for x, y, sup in inst.binary:
        width[x] = max(width[x], len(sup))
        width[y] = max([width[y]] + [s.bit_length() for s in sup])
    for clause in inst.clauses:
        for v, a in clause:
            width[v] = max(width[v], a + 1)
    return width


def random_symmetry(inst: Instance, rng: random.Random, values: bool = True) -> Symmetry:
    n = inst.n
    var_perm = list(range(n))
    rng.shuffle(var_perm)
    val_perm = []
    for size in value_widths(inst):
        p = list(range(size))
        if values:
            rng.shuffle(p)
        val_perm.append(p)
    return Symmetry(var_perm, val_perm)


def apply(inst: Instance, sym: Symmetry, rng: random.Random, name_suffix: str = "") -> Instance:
    n = inst.n
    pi, sigma = sym.var_perm, sym.val_perm
    domains = [0] * n
    for v, d in enumerate(inst.domains):
        domains[pi[v]] = _map_mask(d, sigma[v])
    binary = []
    for x, y, sup in inst.binary:
        new = [0] * len(sigma[x])
        for a in range(min(len(sup), len(sigma[x]))):
            new[sigma[x][a]] = _map_mask(sup[a], sigma[y])
        binary.append((pi[x], pi[y], tuple(new)))
    rng.shuffle(binary)
    clauses = []
    for clause in inst.clauses:
        lits = [(pi[v], sigma[v][a]) for v, a in clause]
        rng.shuffle(lits)
        clauses.append(tuple(lits))
    rng.shuffle(clauses)
    meta = {k: v for k, v in inst.meta.items() if k not in ("planted", "solution")}
    for key in ("planted", "solution"):  # keep known solutions usable: rename them too
        if key in inst.meta and isinstance(inst.meta[key], list) and len(inst.meta[key]) == n:
            sol = [0] * n
            for v, a in enumerate(inst.meta[key]):
                sol[pi[v]] = sigma[v][a]
            meta[key] = sol
    meta["symmetry_of"] = inst.name
    return Instance(name=inst.name + name_suffix, family=inst.family, size=inst.size, seed=inst.seed,
                    domains=domains, binary=binary, clauses=clauses, params=dict(inst.params), meta=meta).check()


def reordered(inst: Instance, rng: random.Random) -> Instance:
    """The same instance with its constraints listed in another order (variables and values unchanged): every
    feature a scorer reads is the same, the search's tie-breaks (which constraint fails first, so which weight
    grows) are not. Probing a state on such copies measures how much of a label is noise (`bench labels`)."""
    same = Symmetry(list(range(inst.n)), [list(range(w)) for w in value_widths(inst)])
    return apply(inst, same, rng)


def tie_ranks(sym: Symmetry) -> tuple[list[int], list[list[int]]]:
    """Ranks for the transformed instance that make ties break as in the original."""
    n = len(sym.var_perm)
    var_rank = [0] * n
    val_rank: list[list[int]] = [[] for _ in range(n)]
    for v, new_v in enumerate(sym.var_perm):
        var_rank[new_v] = v
        r = [0] * len(sym.val_perm[v])
        for a, new_a in enumerate(sym.val_perm[v]):
            r[new_a] = a
        val_rank[new_v] = r
    return var_rank, val_rank
