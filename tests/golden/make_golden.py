"""Write tests/golden/solver_golden.json from the pure-Python reference core (tests/reference/py_solver.py).

How the golden file was made (2026-11-29, from the pure-Python core of commit e1860ac, the last production
version before the native core): `python tests/golden/make_golden.py`. Every run records status and the
counters that pin the search tree (nodes, backtracks, propagations, checks, max depth, restarts); decision
traces and probe results are recorded as well. The native core must reproduce every figure
(tests/unit/test_native_golden.py). Re-run only if the search itself is meant to change, and say so.
The 10 rb/xxlarge cases (Model RB n=50, a size added after the switch) were made the same way from
tests/reference on 2026-11-29; the 228 earlier cases came from the cached parts, unchanged byte for byte.

Instances: every family x size, 10 indices each (200), plus the public DIMACS files in benchmarks/public
(CNF as they are; .col at their chromatic number and one colour fewer). Node limits keep the reference run
to minutes; a run cut by its limit still pins the tree up to the limit. Parts are computed in parallel and
kept in tests/golden/.parts/ (git-ignored) so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `tests` is a package, as pytest sees it (never put tests/ itself on the path:
#                                  tests/ray would shadow the ray package)

import ray_pipeline.solver  # noqa: E402,F401  (imported now: the sudoku generator imports it lazily)
from ray_pipeline.problems import SIZE_DEFAULTS, generate, read_cnf, read_col  # noqa: E402
from tests.reference import py_solver  # noqa: E402

OUT = Path(__file__).with_name("solver_golden.json")
SEED = 7
INDICES = range(10)
NODE_LIMIT = 800
COL_CHROMATIC = {"queen6_6.col": 7, "jean.col": 10, "myciel6.col": 7, "miles250.col": 8}
COUNTED = ("nqueens", "sudoku", "coloring")  # families whose small instances also get a solution count


def golden_scorer(x: np.ndarray) -> np.ndarray:
    """A fixed policy over the feature columns: the learned heuristic's tree then depends on every feature
    value and on the top-K/margin logic, so equal trees mean equal features and equal policy plumbing."""
    return -x[:, 4] + 0.3 * x[:, 19] - 0.2 * x[:, 12] + 0.1 * x[:, 24] + 0.05 * x[:, 31]


def run_kwargs(family: str) -> list[dict]:
    runs = [{"heuristic": h, "propagation": p} for h in ("lex", "mrv", "dom-deg", "dom-wdeg") for p in ("fc", "mac")]
    runs += [{"heuristic": "dom-wdeg", "propagation": p, "value_order": "min-conflicts"} for p in ("fc", "mac")]
    runs.append({"heuristic": "mrv", "propagation": "mac", "value_order": "min-conflicts"})
    runs.append({"heuristic": "dom-wdeg", "propagation": "mac", "restarts": True, "restart_base": 20})
    runs.append({"heuristic": "dom-wdeg", "propagation": "mac", "ranks": "reversed"})
    runs.append({"heuristic": "learned", "propagation": "mac", "top_k": 4, "max_depth": 3, "min_margin": 0.0})
    runs.append({"heuristic": "learned", "propagation": "fc", "top_k": 8, "max_depth": None, "min_margin": 0.05})
    return runs


def solver_kwargs(inst, kw: dict) -> dict:
    """The JSON run description -> Solver keyword arguments (shared with the golden test)."""
    out = dict(kw)
    if out.pop("ranks", None) == "reversed":
        out["var_rank"] = list(range(inst.n - 1, -1, -1))
        out["val_rank"] = [list(range(d.bit_length() - 1, -1, -1)) for d in inst.domains]
    if out.get("heuristic") == "learned":
        out["scorer"] = golden_scorer
    return out


def counters(r) -> dict:
    s = r.stats
    return {"status": r.status, "nodes": s.nodes, "backtracks": s.backtracks, "propagations": s.propagations,
            "checks": s.checks, "max_depth": s.max_depth, "restarts": s.restarts}


class Recorder:
    """Decision trace as the data stage records it, plus state snapshots at chosen decisions."""

    def __init__(self, capture=()):
        self.rows, self.capture, self.snapshots = [], set(capture), {}

    def on_decision(self, s, depth, chosen):
        idx = len(self.rows)
        if idx in self.capture:
            self.snapshots[idx] = (list(s.dom), list(s.weights), depth)
        self.rows.append([depth, sum(1 for d in s.dom if d & (d - 1)), chosen, 0, False])
        return idx

    def on_outcome(self, token, subtree, solved):
        self.rows[token][3], self.rows[token][4] = subtree, solved


def trace_digest(rows: list) -> str:
    return hashlib.sha1(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def instance_case(inst, source: dict) -> dict:
    case = {"source": source, "stable_id": inst.stable_id(), "n": inst.n, "runs": []}
    for kw in run_kwargs(inst.family):
        r = py_solver.Solver(inst, node_limit=NODE_LIMIT, **solver_kwargs(inst, kw)).solve()
        case["runs"].append({"kw": kw, **counters(r)})
    # Decision trace (dom/wdeg, MAC) and probes from snapshots of it, the way the label step uses them.
    rec = Recorder(capture=(0, 3, 10))
    r = py_solver.Solver(inst, heuristic="dom-wdeg", propagation="mac", node_limit=NODE_LIMIT, tracer=rec).solve()
    case["trace"] = {"n": len(rec.rows), "sha1": trace_digest(rec.rows), "head": rec.rows[:20]}
    probes = []
    for idx, (dom, weights, depth) in sorted(rec.snapshots.items()):
        s = py_solver.Solver(inst, domains=dom, weights=weights)
        for c in s.dom_wdeg_order(s.unassigned())[:3]:
            p = py_solver.Solver(inst, domains=dom, weights=weights, first_var=c, node_limit=300).solve()
            probes.append({"decision": idx, "first_var": c, **counters(p)})
    case["probes"] = probes
    if inst.family in COUNTED and inst.size == "small":
        case["count3"] = py_solver.count_solutions(inst, limit=3, node_limit=20 * NODE_LIMIT)
    return case


PARTS = Path(__file__).with_name(".parts")
BENCH = REPO / "benchmarks" / "public"


def part_names() -> list[str]:
    names = [f"{f}/{s}/{i}" for f in sorted(SIZE_DEFAULTS) for s in SIZE_DEFAULTS[f] for i in INDICES]
    names += [f"sat/{f.name}" for f in sorted((BENCH / "sat").glob("*.cnf"))]
    names += [f"col/{f.name}/{k}" for f in sorted((BENCH / "col").glob("*.col"))
              for k in (COL_CHROMATIC[f.name], COL_CHROMATIC[f.name] - 1)]
    return names


def make_part(name: str) -> str:
    out = PARTS / (name.replace("/", "__") + ".json")
    if out.exists():
        return name
    parts = name.split("/")
    if parts[0] == "sat":
        case = instance_case(read_cnf(BENCH / name), {"file": name})
    elif parts[0] == "col":
        k = int(parts[2])
        case = instance_case(read_col(BENCH / "col" / parts[1], k), {"file": f"col/{parts[1]}", "colors": k})
    else:
        family, size, i = parts[0], parts[1], int(parts[2])
        case = instance_case(generate(family, size, i, SEED), {"generate": [family, size, i, SEED]})
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(case, separators=(",", ":")))
    tmp.rename(out)
    return name


def main() -> None:
    import multiprocessing as mp

    t0 = time.perf_counter()
    PARTS.mkdir(exist_ok=True)
    names = part_names()
    with mp.get_context("spawn").Pool(int(sys.argv[1]) if len(sys.argv) > 1 else 2) as pool:
        for k, name in enumerate(pool.imap_unordered(make_part, names), 1):
            print(f"{k}/{len(names)} {name} {time.perf_counter() - t0:.0f} s", flush=True)
    cases = [json.loads((PARTS / (n.replace("/", "__") + ".json")).read_text()) for n in names]
    OUT.write_text(json.dumps({"made_by": "tests/golden/make_golden.py from tests/reference/py_solver.py",
                               "node_limit": NODE_LIMIT, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {len(cases)} cases)")


if __name__ == "__main__":
    main()
