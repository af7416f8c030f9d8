"""A finite-domain backtracking solver with bitset domains, traced decisions and pluggable heuristics.

Domains are bitmasks (Python ints here; 64-bit words in the core). Binary constraints are support bitmasks per
value (pairs on the same scope are merged); clauses are disjunctions of (var, value) literals with unit
propagation. Search is 2-way branching (x=a, then x!=a), the usual setting of dom/wdeg (Boussemart et al.
2004). The search itself runs in the native core (`native/`, C++ built on `pip install`); this module is its
Python API: it compiles an instance into the core's arrays, passes options and callbacks (a tracer, the learned
heuristic's scorer) and wraps the results. Every solution the core reports is checked against every
constraint in the core and, for the one returned, against the instance here.

The pure-Python core this replaced lives on as the reference of the differential tests
(tests/reference/py_solver.py): both produce identical search trees (tests/unit/test_native_golden.py).
"""
from __future__ import annotations

import importlib.util
import os
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from ..problems.instance import Instance
from .schema import INPUT_FEATURES

HEURISTICS = ("lex", "random", "mrv", "dom-deg", "dom-wdeg", "learned", "expert")
PROPAGATIONS = ("fc", "mac")
VALUE_ORDERS = ("lex", "min-conflicts")

# scorer(features [k, F] float32) -> scores [k]; higher = branch on it first
Scorer = Callable[..., Sequence[float]]

WORD = 64
_WORD_MASK = (1 << WORD) - 1
# The sanitizer test loads a core built with -fsanitize=address,undefined from this file instead.
NATIVE_ENV = "RAY_PIPELINE_NATIVE_CORE"


def _load_native():
    path = os.environ.get(NATIVE_ENV)
    if not path:
        import ray_pipeline_native  # top-level (CMakeLists.txt says why)

        return ray_pipeline_native
    spec = importlib.util.spec_from_file_location("ray_pipeline_native", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{NATIVE_ENV}={path!r}: not a loadable extension module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_native = _load_native()
if tuple(_native.feature_names()) != INPUT_FEATURES:  # a stale build of the core: never score wrong columns
    raise ImportError(f"the native core ({_native.__file__}) was built from another native/features.def; "
                      "reinstall the package (pip install -e .)")


class SolverBug(AssertionError):
    """The solver produced an assignment that violates a constraint. Never expected; never hidden."""


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
    model_time_s: float = 0.0  # inside the scorer (a native MLP: timed in the core)
    feature_time_s: float = 0.0  # building the scorer's input
    probes: int = 0  # the expert's probe searches (their nodes are not in `nodes`)
    probe_nodes: int = 0
    probe_time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    status: str  # "SAT" | "UNSAT" | "UNKNOWN"
    assignment: Optional[list[int]]
    stats: Stats = field(default_factory=Stats)
    solutions: int = 0


@dataclass
class Trace:
    """A decision trace as columns: one entry per recorded decision, and state snapshots at chosen decisions."""

    depth: np.ndarray
    n_cands: np.ndarray
    chosen: np.ndarray
    subtree: np.ndarray
    solved: np.ndarray
    count: int  # decisions seen (recorded or not)
    snapshots: dict[int, tuple[list[int], list[int], int]]  # decision -> (domains, weights, depth)


class _TracerCall:
    """The core calls on_decision(depth, chosen); Python tracers take the solver first. Holds the solver by a
    weak reference: the core holds this object, the solver holds the core, and the garbage collector cannot
    see through the native side to break a cycle."""

    def __init__(self, tracer: Tracer, solver: "Solver"):
        self.tracer, self.solver = tracer, weakref.ref(solver)

    def on_decision(self, depth: int, chosen: int) -> object:
        return self.tracer.on_decision(self.solver(), depth, chosen)

    def on_outcome(self, token: object, subtree: int, solved: bool) -> None:
        self.tracer.on_outcome(token, subtree, solved)


class _PolicyCall:
    """The learned heuristic's callback: the core hands over the candidates' feature rows (computed natively),
    the scorer scores them. Knows nothing of models: any scorer(features [k, F] float32) -> [k] will do; a scorer
    with `wants_state` (a graph model) is given the solver too: score_state(solver, cands, features). The solver
    is held by a weak reference, as in _TracerCall."""

    def __init__(self, scorer: Scorer, stats: "Stats", solver: "Solver"):
        self.scorer, self.stats, self.solver = scorer, stats, weakref.ref(solver)
        self.with_state = bool(getattr(scorer, "wants_state", False))

    def __call__(self, cands: list[int], depth: int, features: np.ndarray) -> list[float]:
        t0 = time.perf_counter()
        scores = self.scorer.score_state(self.solver(), cands, features) if self.with_state else \
            self.scorer(features)
        self.stats.model_time_s += time.perf_counter() - t0
        return np.asarray(scores, dtype=np.float64).reshape(-1).tolist()


class Solver:
    def __init__(self, inst: Instance, *, heuristic: str = "dom-wdeg", propagation: str = "mac",
                 value_order: str = "lex", node_limit: Optional[int] = None, time_limit: Optional[float] = None,
                 seed: int = 0, scorer: Optional[Scorer] = None, top_k: Optional[int] = None,
                 max_depth: Optional[int] = None, min_margin: float = 0.0, restarts: bool = False,
                 restart_base: int = 100, probe_budget: int = 1000, tracer: Optional[Tracer] = None, var_rank: Optional[Sequence[int]] = None,
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
        if probe_budget < 0:
            raise ValueError(f"probe_budget must be >= 0, got {probe_budget}")
        self.inst = inst
        self.heuristic, self.value_order = heuristic, value_order
        self.scorer, self.top_k, self.max_depth, self.min_margin = scorer, top_k, max_depth, min_margin
        n = inst.n
        self.n = n
        self.var_rank = list(var_rank) if var_rank is not None else list(range(n))
        c = compiled if compiled is not None else compile_instance(inst)
        if c.n != n:
            raise ValueError(f"compiled instance has {c.n} variables, instance {n}")
        self.compiled = c
        self.n_cons = c.n_cons
        if domains is not None and len(domains) != n:
            raise ValueError(f"{len(domains)} domains for {n} variables")
        if weights is not None and len(weights) != self.n_cons:
            raise ValueError(f"{len(weights)} weights for {self.n_cons} constraints")
        if first_var is not None and not 0 <= first_var < n:
            raise ValueError(f"first_var {first_var} out of range for {n} variables")
        self.stats = Stats()
        self.count_limit = 0
        # a scorer the core evaluates itself (solver.policy.NativeMlp, NativeGraph): no call into Python per decision
        mlp = getattr(scorer, "native", None)
        self._native_policy = isinstance(mlp, _native.Policy)
        self._core = _native.Solver(
            c.native, heuristic, propagation == "mac", value_order == "min-conflicts",
            -1 if node_limit is None else int(node_limit), float(time_limit or 0.0), int(seed) & _WORD_MASK,
            int(top_k or 0), -1 if max_depth is None else int(max_depth), float(min_margin), bool(restarts),
            int(restart_base), -1 if first_var is None else int(first_var), 0, int(probe_budget),
            None if domains is None else _to_words(domains, c.W), None if weights is None else [int(w) for w in weights],
            None if var_rank is None else self.var_rank,
            None if val_rank is None else [list(r) for r in val_rank],
            None if tracer is None else _TracerCall(tracer, self),
            _PolicyCall(scorer, self.stats, self) if heuristic == "learned" and not self._native_policy else None,
            mlp if heuristic == "learned" and self._native_policy else None)
        self._trace_on = False

    # ------------------------------------------------------------------------------------ state
    @property
    def dom(self) -> list[int]:
        return _from_words(self._core.domain_words(), self.compiled.W)

    @property
    def weights(self) -> list[int]:
        return self._core.weights()

    def unassigned(self) -> list[int]:
        return self._core.unassigned()

    def snapshot(self) -> tuple[list[int], list[int]]:
        return self.dom, self.weights

    def active_clauses(self) -> list[bool]:
        """Clauses not yet satisfied (they still constrain their open variables)."""
        return self._core.active_clauses()

    def dom_wdeg_order(self, cands: list[int]) -> list[int]:
        """Candidates best-first by dom/wdeg (ties by rank): the baseline ranking and the top-K preselection."""
        return self._core.dom_wdeg_order(list(cands))

    def _value(self, x: int) -> int:
        """The value the search tries first on x."""
        return self._core.first_value(x)

    def probe_costs(self, cands: Sequence[int], budget: int) -> list[int]:
        """Per candidate: nodes to finish the subproblem of the current state with it branched on first (dom/wdeg,
        or this solver's plain heuristic), budget+1 when over `budget` (censored). The label step's and the
        expert heuristic's one definition of a probe."""
        costs = self._core.probe_costs([int(c) for c in cands], int(budget))
        core = self._core.stats()
        self.stats.probes, self.stats.probe_nodes = core["probes"], core["probe_nodes"]
        self.stats.probe_time_s = core["probe_time_s"]
        return costs

    def features(self, cands: Sequence[int], depth: int) -> np.ndarray:
        """[len(cands), N_INPUT] float32 feature rows of the current state (names: solver.schema)."""
        return self._core.features(list(cands), int(depth))

    # ------------------------------------------------------------------------------------ search
    def record_trace(self, max_records: Optional[int] = None, capture: Sequence[int] = ()) -> None:
        """Record the decisions of the coming solve() natively, as columns (see `trace()`), and snapshot the
        state at the decisions in `capture`. Faster than a Python tracer: no call per decision."""
        self._core.record_trace(-1 if max_records is None else int(max_records), [int(i) for i in capture])
        self._trace_on = True

    def trace(self) -> Trace:
        if not self._trace_on:
            raise RuntimeError("record_trace() was not called before solve()")
        t = self._core.trace_columns()
        n, nc, W = self.n, self.n_cons, self.compiled.W
        snaps = {}
        for i, idx in enumerate(t["snap_index"]):
            words = t["snap_dom"][i * n * W:(i + 1) * n * W]
            snaps[idx] = (_from_words(words, W), t["snap_weights"][i * nc:(i + 1) * nc], t["snap_depth"][i])
        return Trace(depth=np.asarray(t["depth"], dtype=np.int32), n_cands=np.asarray(t["n_cands"], dtype=np.int32),
                     chosen=np.asarray(t["chosen"], dtype=np.int32), subtree=np.asarray(t["subtree"], dtype=np.int64),
                     solved=np.asarray(t["solved"], dtype=bool), count=t["count"], snapshots=snaps)

    def solve(self) -> Result:
        if self.count_limit:
            self._core.set_count_limit(int(self.count_limit))
        try:
            status = self._core.solve()
        except RuntimeError as e:
            if "invalid assignment" in str(e):
                raise SolverBug(f"{self.inst.name}: {e}") from None
            raise
        st = self.stats
        core_stats = self._core.stats()
        policy_s = core_stats.pop("policy_time_s")
        for k, v in core_stats.items():
            setattr(st, k, v)
        if self._native_policy:  # else _PolicyCall timed the Python scorer itself
            st.model_time_s = policy_s
        assignment = None
        if status == "SAT":
            assignment = self._core.first_solution()
            bad = self.inst.violations(assignment)
            if bad:
                raise SolverBug(f"{self.inst.name}: solver reached an invalid assignment: {bad[:3]}")
        return Result(status, assignment, st, self._core.solutions())


def _to_words(domains: Sequence[int], W: int) -> list[int]:
    if W == 1:
        return [int(d) for d in domains]
    return [(int(d) >> (WORD * k)) & _WORD_MASK for d in domains for k in range(W)]


def _from_words(words: Sequence[int], W: int) -> list[int]:
    if W == 1:
        return list(words)
    out = []
    for i in range(0, len(words), W):
        d = 0
        for k in range(W):
            d |= words[i + k] << (WORD * k)
        out.append(d)
    return out


class Compiled:
    """See `compile_instance`."""

    n: int
    cvars: list[tuple[int, ...]]
    arcs: list[list[tuple]]  # x -> (y, sup_xy, cid)
    var_bin: list[list[tuple[int, int]]]  # x -> (y, cid)
    tightness: list[float]
    n_bin: int
    clauses: list[tuple[tuple[int, int], ...]]
    occ: list[list[int]]
    n_cons: int
    static_deg: list[int]
    init_size: list[int]
    W: int  # 64-bit words per domain in the core
    native: "_native.Compiled"  # the same, as the core's flat arrays (built once, shared by every solver)


def compile_instance(inst: Instance) -> "Compiled":
    """The immutable, shareable part of a solver: merged constraints, arcs, occurrence lists, statistics, and
    the same as the core's flat arrays. Compile once per instance when many solvers run on it (probing)."""
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
    c.arcs = [[] for _ in range(n)]  # x -> (y, sup_xy, cid)
    c.var_bin = [[] for _ in range(n)]  # x -> (y, cid)
    c.tightness = []
    for (x, y), sup in merged.items():
        cid = len(c.cvars)
        c.cvars.append((x, y))
        sup_xy = tuple(sup)
        sup_yx = tuple(_transpose(sup_xy, size[x], size[y]))
        c.arcs[x].append((y, sup_xy, cid))
        c.arcs[y].append((x, sup_yx, cid))
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
    c.W = max(1, -(-max(size) // WORD))
    c.native = _native_arrays(c, inst, size)
    return c


def _native_arrays(c: "Compiled", inst: Instance, size: list[int]) -> "_native.Compiled":
    W = c.W
    full = (1 << (WORD * W)) - 1  # support bits past every domain change nothing (they meet dom & sup)
    arc_start, arc_y, arc_cid, arc_sup, sup_words = [0], [], [], [], []
    bin_arc = [-1] * c.n_bin
    for x in range(c.n):
        for y, sup, cid in c.arcs[x]:
            if bin_arc[cid] < 0:
                bin_arc[cid] = len(arc_y)
            arc_y.append(y)
            arc_cid.append(cid)
            arc_sup.append(len(sup_words))
            sup_words.extend(_to_words([m & full for m in sup], W))
        arc_start.append(len(arc_y))
    clause_start, lit_v, lit_a = [0], [], []
    for clause in c.clauses:
        for v, a in clause:
            lit_v.append(v)
            lit_a.append(a)
        clause_start.append(len(lit_v))
    occ_start, occ = [0], []
    for x in range(c.n):
        occ.extend(c.occ[x])
        occ_start.append(len(occ))
    return _native.Compiled(c.n, W, _to_words(inst.domains, W), size, arc_start, arc_y, arc_cid, arc_sup,
                            sup_words, bin_arc, clause_start, lit_v, lit_a, occ_start, occ, c.n_bin, c.n_cons,
                            c.tightness, c.static_deg, c.init_size)



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
    return s.solve().solutions
