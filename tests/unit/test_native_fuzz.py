"""Differential fuzz of the native core: random instances shaped like no generator makes them.

Random domains (holes, up to 150 values: one, two and three 64-bit words), binary tables of random
tightness, clauses over any values, states given as sub-domains with weights. For each: the answer agrees
with python-sat (direct CNF encoding) and with OR-Tools CP-SAT, the solution count with python-sat's
enumeration, and every counter with the pure-Python reference core.
"""
from __future__ import annotations

import random

import pytest
from ortools.sat.python import cp_model
from pysat.solvers import Solver as SatSolver

from ray_pipeline.problems.instance import Instance
from ray_pipeline.solver import Solver, count_solutions

from .test_solver import to_cnf

from ..reference import py_solver

COUNTERS = ("nodes", "backtracks", "propagations", "checks", "max_depth", "restarts")


def random_instance(rng: random.Random, i: int) -> Instance:
    n = rng.randint(2, 9)
    width = rng.choice([2, 3, 5, 8, 63, 64, 65, 100, 150])
    domains = []
    for _ in range(n):
        d = 0
        while not d:
            d = sum(1 << a for a in range(width) if rng.random() < rng.choice([0.3, 0.7, 1.0]))
        domains.append(d)
    binary = []
    for _ in range(rng.randint(0, 2 * n)):
        x, y = rng.sample(range(n), 2)
        keep = rng.choice([0.2, 0.5, 0.8, 0.95])
        size_x, size_y = domains[x].bit_length(), domains[y].bit_length()
        sup = tuple(sum(1 << b for b in range(size_y + rng.randint(0, 3)) if rng.random() < keep)
                    for _ in range(size_x + rng.randint(0, 2)))
        binary.append((x, y, sup))
    clauses = []
    for _ in range(rng.randint(0, 2 * n)):
        k = rng.randint(1, 3)
        clauses.append(tuple((v, rng.randrange(domains[v].bit_length() + 1)) for v in rng.choices(range(n), k=k)))
    return Instance(f"fuzz-{i}", "fuzz", "x", i, domains=domains, binary=binary, clauses=clauses).check()


def pysat_answer(inst: Instance, count_to: int = 0) -> tuple[bool, int]:
    cnf = to_cnf(inst)
    if any(not c for c in cnf):  # a clause with no literal inside the domains
        return False, 0
    with SatSolver(name="minisat22", bootstrap_with=cnf) as s:
        if not count_to:
            return s.solve(), 0
        found = 0
        for model in s.enum_models():
            found += 1
            if found >= count_to:
                break
        return found > 0, found


def cpsat_answer(inst: Instance) -> bool:
    m = cp_model.CpModel()
    xs = [m.NewIntVarFromDomain(cp_model.Domain.FromValues([a for a in range(d.bit_length()) if d >> a & 1]), f"x{v}")
          for v, d in enumerate(inst.domains)]
    for x, y, sup in inst.binary:
        allowed = [(a, b) for a in range(len(sup)) for b in range(sup[a].bit_length()) if sup[a] >> b & 1]
        m.AddAllowedAssignments([xs[x], xs[y]], allowed)
    for clause in inst.clauses:
        lits = []
        for v, a in clause:
            b = m.NewBoolVar("")
            m.Add(xs[v] == a).OnlyEnforceIf(b)
            m.Add(xs[v] != a).OnlyEnforceIf(b.Not())
            lits.append(b)
        m.AddBoolOr(lits)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    status = solver.Solve(m)
    assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE)
    return status != cp_model.INFEASIBLE


@pytest.mark.parametrize("chunk", range(4))
def test_native_agrees_with_the_reference_core_and_two_independent_solvers(chunk):
    rng = random.Random(1000 + chunk)
    answers = {True: 0, False: 0}
    multiword = 0
    for i in range(chunk * 100, chunk * 100 + 100):
        inst = random_instance(rng, i)
        multiword += inst.max_dom > 64
        h = rng.choice(["lex", "mrv", "dom-deg", "dom-wdeg"])
        kw = dict(heuristic=h, propagation=rng.choice(["fc", "mac"]),
                  value_order=rng.choice(["lex", "min-conflicts"]), restarts=rng.random() < 0.2, restart_base=3)
        if rng.random() < 0.3:  # a state: sub-domains and weights, as the label step's probes start from
            kw["domains"] = [d & ~(rng.getrandbits(d.bit_length()) & rng.getrandbits(d.bit_length())) or d
                             for d in inst.domains]
            kw["first_var"] = rng.randrange(inst.n)
        native = Solver(inst, **kw).solve()
        ref = py_solver.Solver(inst, **kw).solve()
        assert native.status == ref.status, (inst.name, kw)
        assert {k: getattr(native.stats, k) for k in COUNTERS} == {k: getattr(ref.stats, k) for k in COUNTERS}, \
            (inst.name, kw)
        if "domains" in kw:
            continue
        sat, _ = pysat_answer(inst)
        assert native.status == ("SAT" if sat else "UNSAT"), inst.name
        answers[sat] += 1
        if sat:
            assert inst.is_solution(native.assignment)
        if i % 5 == 0:
            assert cpsat_answer(inst) == sat, inst.name
        if i % 3 == 0:
            _, count = pysat_answer(inst, count_to=4)
            assert count_solutions(inst, limit=4) == count, inst.name
    assert answers[True] and answers[False] and multiword, "the fuzz must reach both answers and wide domains"


def test_bad_states_are_refused_with_a_clear_error():
    inst = Instance("t", "fuzz", "x", 0, domains=[0b111, 0b11], binary=[(0, 1, (0b1, 0b10, 0b11))]).check()
    with pytest.raises(ValueError, match="outside the instance's domain"):
        Solver(inst, domains=[0b1000, 0b11])
    with pytest.raises(ValueError, match="first_var"):
        Solver(inst, first_var=5)
    with pytest.raises(ValueError, match="weights"):
        Solver(inst, weights=[1, 2, 3])
    with pytest.raises(IndexError):
        Solver(inst).dom_wdeg_order([7])


class _Counting:
    def __init__(self):
        self.open = 0

    def on_decision(self, s, depth, chosen):
        assert chosen in s.unassigned()
        self.open += 1
        return (depth, chosen)

    def on_outcome(self, token, subtree, solved):
        self.open -= 1
        assert subtree >= 1


def test_native_core_every_option_on_random_instances():
    """Only the native core (no reference, no other solver): every option and callback on wide and narrow
    domains. Cheap, so the sanitizer build runs it whole (test_native_sanitizers.py)."""
    rng = random.Random(77)
    for i in range(300):
        inst = random_instance(rng, i)
        for h in ("lex", "random", "mrv", "dom-deg", "dom-wdeg", "learned"):
            kw = dict(heuristic=h, propagation=rng.choice(["fc", "mac"]), seed=i,
                      value_order=rng.choice(["lex", "min-conflicts"]), restarts=rng.random() < 0.3, restart_base=2,
                      node_limit=rng.choice([None, 5, 50]), top_k=rng.choice([None, 2]),
                      max_depth=rng.choice([None, 1]), min_margin=rng.choice([0.0, 0.1]))
            if h == "learned":
                kw["scorer"] = lambda x: x[:, 0] - x[:, 4]
            if rng.random() < 0.3:
                kw["var_rank"] = rng.sample(range(inst.n), inst.n)
                kw["val_rank"] = [rng.sample(range(d.bit_length()), d.bit_length()) for d in inst.domains]
            s = Solver(inst, **kw)
            tracer = None
            if rng.random() < 0.5:
                s.record_trace(max_records=rng.choice([None, 3]), capture=[0, 2])
            elif rng.random() < 0.5:
                tracer = _Counting()
                s = Solver(inst, tracer=tracer, **kw)
            r = s.solve()
            if r.status == "SAT":
                assert inst.is_solution(r.assignment)
            if tracer is not None and r.status != "UNKNOWN" and not kw["restarts"]:
                assert tracer.open == 0
        assert count_solutions(inst, limit=3) <= 3


def _numpy_mlp(a: dict, x):
    """The native MLP's arithmetic in numpy (float32): the reference of the fuzz below."""
    import numpy as np

    h = np.clip((x - a["mean"]) / a["std"], -a["clip"], a["clip"]).astype(np.float32)
    for i in range(int(a["n_layers"])):
        h = h @ a[f"w{i}"].T + a[f"b{i}"]
        if a["relu"][i]:
            h = np.maximum(h, 0)
    return h[:, 0].astype(np.float64)


def test_native_mlp_policy_on_random_weights_and_instances(tmp_path):
    """Random MLP shapes (torch-free, so it also runs under the sanitizers): scores equal numpy's to 1e-5, and a
    search scored inside the core equals the search that calls the same MLP from Python, counter for counter."""
    import numpy as np

    from ray_pipeline.problems import generate
    from ray_pipeline.solver.policy import NativeMlp, save_mlp
    from ray_pipeline.solver.schema import INPUT_FEATURES

    F = len(INPUT_FEATURES)
    rng = np.random.default_rng(7)
    for t in range(12):
        widths = [F] + [int(w) for w in rng.integers(1, 80, size=rng.integers(0, 4))] + [1]
        layers = [(rng.normal(0, 1 / np.sqrt(i), (o, i)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32),
                   k < len(widths) - 2) for k, (i, o) in enumerate(zip(widths, widths[1:]))]
        path = tmp_path / f"m{t}.npz"
        save_mlp(path, kind="student", mean=rng.normal(0, 1, F), std=rng.uniform(0.1, 5, F), clip=8.0, layers=layers)
        mlp = NativeMlp(path)
        x = (rng.normal(0, 5, (int(rng.integers(1, 40)), F)) * (rng.random((1, F)) < 0.8)).astype(np.float32)
        assert np.abs(mlp(x) - _numpy_mlp(mlp.arrays, x)).max() <= 1e-5, widths
        inst = generate(["rb", "coloring", "ksat", "nqueens"][t % 4], "small", t, 0)
        kw = dict(heuristic="learned", top_k=int(rng.integers(2, 10)), node_limit=2000,
                  max_depth=None if t % 3 else 2, min_margin=float(rng.choice([0.0, 0.05])))
        a = Solver(inst, scorer=mlp, **kw).solve()
        b = Solver(inst, scorer=lambda rows: mlp(rows), **kw).solve()  # a Python callable: the callback path
        assert (a.status, a.stats.nodes, a.stats.backtracks, a.stats.model_calls) == \
            (b.status, b.stats.nodes, b.stats.backtracks, b.stats.model_calls), (t, widths)
