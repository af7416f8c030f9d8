"""The native core searches exactly the trees the pure-Python core searched.

tests/golden/solver_golden.json was written by tests/golden/make_golden.py from the pure-Python core
(tests/reference/py_solver.py, the production core up to commit e1860ac) before the native core replaced it:
230+ instances over every family and size plus the public DIMACS files; per instance lex / mrv / dom-deg /
dom-wdeg x FC / MAC, min-conflicts value order, restarts, reversed variable and value ranks, the learned
heuristic with a fixed policy over the features, a decision trace, probes from traced states and a solution
count. Every counter that pins a tree (nodes, backtracks, propagations, checks, max depth, restarts) must match.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_pipeline.problems import generate, read_cnf, read_col
from ray_pipeline.solver import Solver, compile_instance, count_solutions

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
from ..golden.make_golden import NODE_LIMIT, counters, solver_kwargs, trace_digest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "public"
GOLDEN = json.loads((GOLDEN_DIR / "solver_golden.json").read_text())
CASES = GOLDEN["cases"]


def _instance(source: dict):
    if "generate" in source:
        return generate(*source["generate"])
    path = BENCH / source["file"]
    return read_col(path, source["colors"]) if "colors" in source else read_cnf(path)


def _case_id(case: dict) -> str:
    s = case["source"]
    return "-".join(map(str, s["generate"][:3])) if "generate" in s else f"{s['file']}:{s.get('colors', '')}"


def test_golden_set_covers_every_family_size_and_the_public_files():
    gen = {tuple(c["source"]["generate"][:2]) for c in CASES if "generate" in c["source"]}
    from ray_pipeline.problems import SIZE_DEFAULTS

    assert gen == {(f, s) for f in SIZE_DEFAULTS for s in SIZE_DEFAULTS[f]}
    files = {c["source"]["file"] for c in CASES if "file" in c["source"]}
    assert files == {f"{p.parent.name}/{p.name}" for p in BENCH.glob("*/*") if p.suffix in (".cnf", ".col")}
    assert len(CASES) >= 200
    outcomes = {r["status"] for c in CASES for r in c["runs"]}
    assert outcomes == {"SAT", "UNSAT", "UNKNOWN"}  # solved both ways, and cut by the node limit


# Groups of ~10 cases keep one failure readable without 230 separate test items.
GROUPS = [CASES[i:i + 10] for i in range(0, len(CASES), 10)]


@pytest.mark.parametrize("group", GROUPS, ids=[_case_id(g[0]) for g in GROUPS])
def test_native_core_reproduces_the_reference_trees(group):
    for case in group:
        inst = _instance(case["source"])
        assert inst.stable_id() == case["stable_id"], f"{_case_id(case)}: the generator or reader changed"
        c = compile_instance(inst)  # immutable and shareable: one per instance, as the label step does
        for run in case["runs"]:
            kw = {k: v for k, v in run["kw"].items()}
            r = Solver(inst, node_limit=NODE_LIMIT, compiled=c, **solver_kwargs(inst, kw)).solve()
            want = {k: run[k] for k in counters(r)}
            assert counters(r) == want, f"{_case_id(case)} {run['kw']}"
            if r.status == "SAT":
                assert inst.is_solution(r.assignment)

        rec_rows, snaps = [], {}

        class Recorder:
            def on_decision(self, s, depth, chosen):
                idx = len(rec_rows)
                if idx in (0, 3, 10):
                    snaps[idx] = (s.dom, s.weights, depth)
                rec_rows.append([depth, sum(1 for d in s.dom if d & (d - 1)), chosen, 0, False])
                return idx

            def on_outcome(self, token, subtree, solved):
                rec_rows[token][3], rec_rows[token][4] = subtree, solved

        Solver(inst, heuristic="dom-wdeg", propagation="mac", node_limit=NODE_LIMIT, tracer=Recorder(), compiled=c).solve()
        assert rec_rows[:20] == case["trace"]["head"], _case_id(case)
        assert (len(rec_rows), trace_digest(rec_rows)) == (case["trace"]["n"], case["trace"]["sha1"]), _case_id(case)

        # The native trace (columns, no Python call per decision) records the same decisions and states.
        s = Solver(inst, heuristic="dom-wdeg", propagation="mac", node_limit=NODE_LIMIT, compiled=c)
        s.record_trace(capture=[0, 3, 10])
        s.solve()
        t = s.trace()
        cols = [[int(d), int(c), int(x), int(st), bool(ok)]
                for d, c, x, st, ok in zip(t.depth, t.n_cands, t.chosen, t.subtree, t.solved)]
        assert trace_digest(cols) == case["trace"]["sha1"], _case_id(case)
        assert t.snapshots == snaps, _case_id(case)

        probes = []
        for idx, (dom, weights, depth) in sorted(snaps.items()):
            st = Solver(inst, domains=dom, weights=weights, compiled=c)
            for v in st.dom_wdeg_order(st.unassigned())[:3]:
                p = Solver(inst, domains=dom, weights=weights, first_var=v, node_limit=300, compiled=c).solve()
                probes.append({"decision": idx, "first_var": v, **counters(p)})
        assert probes == case["probes"], _case_id(case)
        if "count3" in case:
            assert count_solutions(inst, limit=3, node_limit=20 * NODE_LIMIT) == case["count3"], _case_id(case)
