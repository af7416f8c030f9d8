"""The pure-Python search core the native core replaced, kept as the reference of the differential tests.

It is the code that generated tests/golden/solver_golden.json (see tests/golden/make_golden.py); the native core
must produce the same search trees. Not a production path: nothing in ray_pipeline imports it.

A finite-domain backtracking solver with bitset domains, traced decisions and pluggable heuristics.

Domains are int bitmasks. Binary constraints are support bitmasks per value (pairs on the same scope are
merged); clauses are disjunctions of (var, value) literals with unit propagation. Search is 2-way branching
(x=a, then x!=a), the usual setting of dom/wdeg (Boussemart et al. 2004). A variable whose domain is a
singleton counts as assigned; with forward checking, every variable that becomes a singleton is propagated,
so when all domains are singletons every constraint has been checked. The solution is still re-verified
against the instance before it is returned.

Pure Python, no Ray. Hot loops use local names on purpose.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Protocol, Sequence

from ray_pipeline.problems.instance import Instance

HEURISTICS = ("lex", "random", "mrv", "dom-deg", "dom-wdeg", "learned")
PROPAGATIONS = ("fc", "mac")
VALUE_ORDERS = ("lex", "min-conflicts")
INF = float("inf")

# scorer(features [k, F] float32) -> scores [k]; higher = branch on it first
Scorer = Callable[..., Sequence[float]]


class SolverBug(AssertionError):
    """The solver produced an assignment that violates a constraint. Never expected; never hidden."""


class _Limit(Exception):
    pass


class _Restart(Exception):
    pass


class _Enough(Exception):
    pass


class Tracer(Protocol):
    def on_decision(self, solver: "Solver", depth: int, chosen: int) -> object: ...

    def on_outcome(self, token: object, subtree_nodes: int, solved: bool) -> None: ...


@dataclass
class Stats:
    nodes: int = 0  # decisions (left branches x=a)
    backtracks: int = 0  # failed left branches
    propagations: int = 0  # variables taken off the propagation queue
    checks: int = 0  # constraint revisions (one support-mask operation each)
    restarts: int = 0
    max_depth: int = 0
    time_s: float = 0.0
    model_calls: int = 0
    model_time_s: float = 0.0  # inside the scorer
    feature_time_s: float = 0.0  # building the scorer's input

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    status: str  # "SAT" | "UNSAT" | "UNKNOWN"
    assignment: Optional[list[int]]
    stats: Stats = field(default_factory=Stats)
    solutions: int = 0


def _luby(i: int) -> int:
    """i-th element (1-based) of the Luby sequence 1,1,2,1,1,2,4,..."""
    k = 1
    while (1 << k) - 1 < i:
        k += 1
    while True:
        if i == (1 << k) - 1:
            return 1 << (k - 1)
        i -= (1 << (k - 1)) - 1
        k = 1
        while (1 << k) - 1 < i:
            k += 1


class Solver:
    def __init__(self, inst: Instance, *, heuristic: str = "dom-wdeg", propagation: str = "mac",
                 value_order: str = "lex", node_limit: Optional[int] = None, time_limit: Optional[float] = None,
                 seed: int = 0, scorer: Optional[Scorer] = None, top_k: Optional[int] = None,
                 max_depth: Optional[int] = None, min_margin: float = 0.0, restarts: bool = False,
                 restart_base: int = 100, tracer: Optional[Tracer] = None, var_rank: Optional[Sequence[int]] = None,
                 val_rank: Optional[Sequence[Sequence[int]]] = None, domains: Optional[Sequence[int]] = None,
                 weights: Optional[Sequence[int]] = None, first_var: Optional[int] = None,
                 compiled: Optional["Compiled"] = None):
        if heuristic not in HEURISTICS:
            raise ValueError(f"unknown heuristic {heuristic!r}; choose from {HEURISTICS}")
        if propagation not in PROPAGATIONS:
            raise ValueError(f"unknown propagation {propagation!r}; choose from {PROPAGATIONS}")
        if value_order not in VALUE_ORDERS:
            raise ValueError(f"unknown value order {value_order!r}; choose from {VALUE_ORDERS}")
        if heuristic == "learned" and scorer is None:
            raise ValueError("heuristic 'learned' needs a scorer")
        self.inst = inst
        self.heuristic, self.mac, self.value_order = heuristic, propagation == "mac", value_order
        self.node_limit, self.time_limit = node_limit, time_limit
        self.rng = random.Random(seed)
        self.scorer, self.top_k, self.max_depth, self.min_margin = scorer, top_k, max_depth, min_margin
        self.restarts, self.restart_base = restarts, restart_base
        self.tracer, self.first_var = tracer, first_var
        n = inst.n
        self.n = n
        self.var_rank = list(var_rank) if var_rank is not None else list(range(n))
        self.val_rank = [list(r) for r in val_rank] if val_rank is not None else None
        c = compiled if compiled is not None else compile_instance(inst)
        if c.n != n:
            raise ValueError(f"compiled instance has {c.n} variables, instance {n}")
        self.compiled = c
        self.cvars, self.arcs, self.var_bin, self.tightness = c.cvars, c.arcs, c.var_bin, c.tightness
        self.n_bin, self.clauses, self.occ, self.n_cons = c.n_bin, c.clauses, c.occ, c.n_cons
        self.static_deg, self.init_size = c.static_deg, c.init_size
        self.dom = list(domains) if domains is not None else list(inst.domains)
        if len(self.dom) != n:
            raise ValueError(f"{len(self.dom)} domains for {n} variables")
        self.weights = list(weights) if weights is not None else [1] * self.n_cons
        if len(self.weights) != self.n_cons:
            raise ValueError(f"{len(self.weights)} weights for {self.n_cons} constraints")
        self.trail: list[tuple[int, int]] = []
        self.stats = Stats()
        self.count_limit = 0
        self.solutions = 0
        self._first_solution: Optional[list[int]] = None
        self._deadline = INF
        self._fails_to_restart = INF

    # ------------------------------------------------------------------------------------ state
    def _set(self, v: int, new: int) -> None:
        self.trail.append((v, self.dom[v]))
        self.dom[v] = new

    def _undo(self, mark: int) -> None:
        trail, dom = self.trail, self.dom
        while len(trail) > mark:
            v, old = trail.pop()
            dom[v] = old

    def unassigned(self) -> list[int]:
        dom = self.dom
        return [v for v in range(self.n) if dom[v] & (dom[v] - 1)]

    def snapshot(self) -> tuple[list[int], list[int]]:
        return list(self.dom), list(self.weights)

    # ------------------------------------------------------------------------------------ propagation
    def _propagate(self, queue: list[int]) -> bool:
        dom, weights, trail = self.dom, self.weights, self.trail
        arcs, occ, clauses, nb, mac = self.arcs, self.occ, self.clauses, self.n_bin, self.mac
        inq = set(queue)
        st = self.stats
        checks = 0
        try:
            while queue:
                x = queue.pop()
                inq.discard(x)
                st.propagations += 1
                dx = dom[x]
                if mac or not dx & (dx - 1):
                    single = not dx & (dx - 1)
                    for y, sup, cid, cache in arcs[x]:
                        dy = dom[y]
                        if not dy & (dy - 1) and y not in inq:
                            # A singleton neighbour off the queue was propagated after it became one, which
                            # left dom[x] inside its supports; shrinking dom[x] cannot take its support away.
                            continue
                        if single:
                            u = sup[dx.bit_length() - 1]
                        else:
                            u = cache.get(dx)
                            if u is None:
                                u, m = 0, dx
                                while m:
                                    low = m & -m
                                    u |= sup[low.bit_length() - 1]
                                    m ^= low
                                cache[dx] = u
                        checks += 1
                        ny = dy & u
                        if ny != dy:
                            if not ny:
                                weights[cid] += 1
                                return False
                            trail.append((y, dy))
                            dom[y] = ny
                            if y not in inq:
                                queue.append(y)
                                inq.add(y)
                for j in occ[x]:
                    checks += 1
                    n_open, last = 0, None
                    for v, a in clauses[j]:
                        dv = dom[v]
                        if dv >> a & 1:
                            if dv == 1 << a:
                                break  # clause satisfied
                            n_open += 1
                            last = (v, a)
                    else:
                        if n_open == 0:
                            weights[nb + j] += 1
                            return False
                        if n_open == 1:
                            v, a = last
                            trail.append((v, dom[v]))
                            dom[v] = 1 << a
                            if v not in inq:
                                queue.append(v)
                                inq.add(v)
            return True
        finally:
            st.checks += checks

    # ------------------------------------------------------------------------------------ heuristics
    def active_clauses(self) -> list[bool]:
        """Clauses not yet satisfied (they still constrain their open variables)."""
        dom = self.dom
        out = []
        for clause in self.clauses:
            for v, a in clause:
                if dom[v] == 1 << a:
                    out.append(False)
                    break
            else:
                out.append(True)
        return out

    def wdeg(self, x: int, active: Optional[list[bool]], weighted: bool = True) -> int:
        dom, w = self.dom, self.weights
        s = 0
        for y, cid in self.var_bin[x]:
            dy = dom[y]
            if dy & (dy - 1):
                s += w[cid] if weighted else 1
        if active is not None:
            nb = self.n_bin
            for j in self.occ[x]:
                if active[j]:
                    s += w[nb + j] if weighted else 1
        return s

    def dom_wdeg_order(self, cands: list[int]) -> list[int]:
        """Candidates best-first by dom/wdeg (ties by rank): the baseline ranking and the top-K preselection."""
        dom, rank = self.dom, self.var_rank
        active = self.active_clauses() if self.clauses else None
        keyed = []
        for x in cands:
            wd = self.wdeg(x, active)
            keyed.append((dom[x].bit_count() / wd if wd else INF, rank[x], x))
        keyed.sort()
        return [x for _, _, x in keyed]

    def _select(self, depth: int) -> int:
        dom, rank = self.dom, self.var_rank
        cands = [v for v in range(self.n) if dom[v] & (dom[v] - 1)]
        if not cands:
            return -1
        if self.first_var is not None and depth == 0 and self.stats.nodes == 0:
            if self.first_var in cands:
                return self.first_var
        h = self.heuristic
        if h == "lex":
            return min(cands, key=rank.__getitem__)
        if h == "random":
            return self.rng.choice(cands)
        if h == "mrv":
            return min(cands, key=lambda v: (dom[v].bit_count(), rank[v]))
        if h == "dom-deg":
            active = self.active_clauses() if self.clauses else None
            best, best_key = -1, None
            for v in cands:
                dd = self.wdeg(v, active, weighted=False)
                key = (dom[v].bit_count() / dd if dd else INF, rank[v])
                if best_key is None or key < best_key:
                    best, best_key = v, key
            return best
        if h == "learned" and len(cands) > 1 and (self.max_depth is None or depth <= self.max_depth):
            return self._select_learned(cands, depth)
        # dom/wdeg, also the learned heuristic's fallback below max_depth
        active = self.active_clauses() if self.clauses else None
        best, best_key = -1, None
        for v in cands:
            wd = self.wdeg(v, active)
            key = (dom[v].bit_count() / wd if wd else INF, rank[v])
            if best_key is None or key < best_key:
                best, best_key = v, key
        return best

    def _select_learned(self, cands: list[int], depth: int) -> int:
        from .py_features import candidate_features

        t0 = time.perf_counter()
        order = self.dom_wdeg_order(cands)
        top = order[: self.top_k] if self.top_k else order
        x = candidate_features(self, top, depth)
        t1 = time.perf_counter()
        scores = self.scorer(x)
        t2 = time.perf_counter()
        self.stats.feature_time_s += t1 - t0
        self.stats.model_time_s += t2 - t1
        self.stats.model_calls += 1
        best = 0
        for i in range(1, len(top)):  # first maximum: ties keep the dom/wdeg order
            if scores[i] > scores[best]:
                best = i
        # Overrule dom/wdeg's choice only when the model prefers another candidate by more than the margin:
        # near-ties are where a small model is most often wrong, and a wrong root choice can cost 7x the nodes.
        if best and scores[best] - scores[0] <= self.min_margin:
            return top[0]
        return top[best]

    def _value(self, x: int) -> int:
        d = self.dom[x]
        if self.value_order == "lex" and self.val_rank is None:
            return (d & -d).bit_length() - 1
        vals = []
        m = d
        while m:
            low = m & -m
            vals.append(low.bit_length() - 1)
            m ^= low
        if self.value_order == "min-conflicts":
            dom = self.dom
            best, best_key = -1, None
            for a in vals:
                conflicts = 0
                for y, sup, _cid, _cache in self.arcs[x]:
                    dy = dom[y]
                    if dy & (dy - 1):
                        conflicts += (dy & ~sup[a]).bit_count()
                for j in self.occ[x]:  # literals on x with another value become false
                    for v, b in self.clauses[j]:
                        if v == x and b == a:
                            conflicts -= 1
                key = (conflicts, self.val_rank[x][a] if self.val_rank else a)
                if best_key is None or key < best_key:
                    best, best_key = a, key
            return best
        if self.val_rank is not None:
            r = self.val_rank[x]
            return min(vals, key=r.__getitem__)
        return vals[0]

    # ------------------------------------------------------------------------------------ search
    def _search(self, depth: int) -> bool:
        st = self.stats
        if depth > st.max_depth:
            st.max_depth = depth
        while True:
            x = self._select(depth)
            if x < 0:
                return self._at_leaf()
            a = self._value(x)
            st.nodes += 1
            if self.node_limit is not None and st.nodes > self.node_limit:
                raise _Limit
            if not st.nodes & 63 and time.perf_counter() > self._deadline:
                raise _Limit
            token = self.tracer.on_decision(self, depth, x) if self.tracer is not None else None
            before = st.nodes
            mark = len(self.trail)
            self._set(x, 1 << a)
            found = self._propagate([x]) and self._search(depth + 1)
            if token is not None:
                self.tracer.on_outcome(token, st.nodes - before + 1, found)
            if found:
                return True
            self._undo(mark)
            st.backtracks += 1
            if st.backtracks >= self._fails_to_restart:
                raise _Restart
            self._set(x, self.dom[x] & ~(1 << a))
            if not self._propagate([x]):
                return False

    def _at_leaf(self) -> bool:
        assignment = [d.bit_length() - 1 for d in self.dom]
        bad = self.inst.violations(assignment)
        if bad:
            raise SolverBug(f"{self.inst.name}: solver reached an invalid assignment: {bad[:3]}")
        self.solutions += 1
        if self._first_solution is None:
            self._first_solution = assignment
        if self.count_limit and self.solutions < self.count_limit:
            return False  # keep enumerating
        if self.count_limit:
            raise _Enough
        return True

    def solve(self) -> Result:
        limit = sys.getrecursionlimit()
        if limit < self.n + 1000:
            sys.setrecursionlimit(self.n + 1000)
        st = self.stats
        t0 = time.perf_counter()
        self._deadline = t0 + self.time_limit if self.time_limit else INF
        status = "UNKNOWN"
        try:
            if not self._propagate(list(range(self.n))):
                status = "UNSAT"
            else:
                root = len(self.trail)
                restart_i = 1
                while True:
                    if self.restarts:
                        self._fails_to_restart = st.backtracks + self.restart_base * _luby(restart_i)
                    try:
                        found = self._search(0)
                        break
                    except _Restart:
                        self._undo(root)
                        st.restarts += 1
                        restart_i += 1
                if found:
                    status = "SAT"
                elif self.count_limit:
                    status = "SAT" if self.solutions else "UNSAT"
                else:
                    status = "UNSAT"
        except _Limit:
            status = "SAT" if self.solutions else "UNKNOWN"
        except _Enough:
            status = "SAT"
        st.time_s = time.perf_counter() - t0
        return Result(status, self._first_solution if status == "SAT" else None, st, self.solutions)


class Compiled:
    """See `compile_instance`."""

    n: int
    cvars: list[tuple[int, ...]]
    arcs: list[list[tuple]]  # x -> (y, sup_xy, cid, cache of dom(x) -> union of supports)
    var_bin: list[list[tuple[int, int]]]  # x -> (y, cid)
    tightness: list[float]
    n_bin: int
    clauses: list[tuple[tuple[int, int], ...]]
    occ: list[list[int]]
    n_cons: int
    static_deg: list[int]
    init_size: list[int]


def compile_instance(inst: Instance) -> "Compiled":
    """The immutable, shareable part of a solver: merged constraints, arcs, occurrence lists, statistics.
    Compile once per instance when many solvers run on it (probing); the arc caches are shared too."""
    c = Compiled()
    n = inst.n
    size = [d.bit_length() for d in inst.domains]
    merged: dict[tuple[int, int], list[int]] = {}
    for x, y, sup in inst.binary:
        if x > y:  # store as (low, high): transpose the table
            sup = _transpose(sup, size[x], size[y])
            x, y = y, x
        sup = list(sup[: size[x]]) + [0] * (size[x] - len(sup))
        cur = merged.get((x, y))
        merged[(x, y)] = sup if cur is None else [a & b for a, b in zip(cur, sup)]
    c.cvars = []
    c.arcs = [[] for _ in range(n)]  # x -> (y, sup_xy, cid, cache)
    c.var_bin = [[] for _ in range(n)]  # x -> (y, cid)
    c.tightness = []
    for (x, y), sup in merged.items():
        cid = len(c.cvars)
        c.cvars.append((x, y))
        sup_xy = tuple(sup)
        sup_yx = tuple(_transpose(sup_xy, size[x], size[y]))
        c.arcs[x].append((y, sup_xy, cid, {}))
        c.arcs[y].append((x, sup_yx, cid, {}))
        c.var_bin[x].append((y, cid))
        c.var_bin[y].append((x, cid))
        dx, dy = inst.domains[x], inst.domains[y]
        allowed = sum((sup_xy[a] & dy).bit_count() for a in range(size[x]) if dx >> a & 1)
        c.tightness.append(1.0 - allowed / max(1, dx.bit_count() * dy.bit_count()))
    c.n_bin = len(c.cvars)
    c.clauses = [tuple(cl) for cl in inst.clauses]
    c.occ = [[] for _ in range(n)]
    for j, clause in enumerate(c.clauses):
        for v in dict.fromkeys(v for v, _ in clause):
            c.occ[v].append(j)
        c.cvars.append(tuple(dict.fromkeys(v for v, _ in clause)))
        t = 1.0
        for v, a in clause:
            d = inst.domains[v].bit_count()
            t *= 1.0 - (1.0 / d if inst.domains[v] >> a & 1 else 0.0)
        c.tightness.append(t)
    c.n_cons = len(c.cvars)
    c.static_deg = [len(c.var_bin[v]) + len(c.occ[v]) for v in range(n)]
    c.init_size = [max(1, d.bit_count()) for d in inst.domains]
    c.n = n
    return c



def _transpose(sup: Sequence[int], size_x: int, size_y: int) -> list[int]:
    out = [0] * size_y
    for a in range(min(size_x, len(sup))):
        m = sup[a]
        while m:
            low = m & -m
            b = low.bit_length() - 1
            if b < size_y:
                out[b] |= 1 << a
            m ^= low
    return out


def solve(inst: Instance, **kwargs) -> Result:
    return Solver(inst, **kwargs).solve()


def count_solutions(inst: Instance, limit: int = 2, **kwargs) -> int:
    """Number of solutions, counted up to `limit` (uniqueness checks use limit=2)."""
    s = Solver(inst, **kwargs)
    s.count_limit = limit
    s.solve()
    return s.solutions
