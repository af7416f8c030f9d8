"""`ray-pipeline bench solver`: the solver's speed and each heuristic's tree size, measured side by side.

Three parts, one JSON object:
- per family: median nodes, median time and nodes/s of every baseline heuristic (MAC);
- Model RB at the threshold (n >= 35 by default): median nodes of lex, MRV, dom/deg, dom/wdeg, FC and MAC;
- time to first solution against python-constraint (its default backtracking + forward checking) on the
  same small instances, each side under the same wall-clock cap, answers cross-checked.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

from ..problems import generate
from ..problems.instance import Instance
from ..solver import Solver

BASELINES = ("lex", "mrv", "dom-deg", "dom-wdeg")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--families", default="nqueens,coloring,sudoku,rb,ksat")
    p.add_argument("--size", default="medium")
    p.add_argument("--count", type=int, default=5, help="instances per family")
    p.add_argument("--rb-n", type=int, default=35)
    p.add_argument("--rb-count", type=int, default=9)
    p.add_argument("--node-limit", type=int, default=100_000)
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds per solve (each side)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--skip-python-constraint", action="store_true")


def _run(inst: Instance, h: str, prop: str, args: argparse.Namespace) -> dict[str, Any]:
    r = Solver(inst, heuristic=h, propagation=prop, node_limit=args.node_limit, time_limit=args.time_limit).solve()
    return {"status": r.status, "nodes": r.stats.nodes, "time_s": r.stats.time_s}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    nodes = [r["nodes"] for r in runs]
    t = sum(r["time_s"] for r in runs)
    return {"median_nodes": statistics.median(nodes), "median_time_s": round(statistics.median(r["time_s"] for r in runs), 4),
            "nodes_per_s": round(sum(nodes) / t, 1) if t else None,
            "solved": sum(r["status"] != "UNKNOWN" for r in runs), "of": len(runs)}


def _python_constraint_worker(inst: Instance, q: "mp.Queue") -> None:
    import constraint as pc

    p = pc.Problem(pc.BacktrackingSolver(forwardcheck=True))
    for v, d in enumerate(inst.domains):
        p.addVariable(v, [a for a in range(d.bit_length()) if d >> a & 1])
    for x, y, sup in inst.binary:
        p.addConstraint(pc.FunctionConstraint(lambda a, b, sup=sup: bool(sup[a] >> b & 1)), [x, y])
    for clause in inst.clauses:
        vs = list(dict.fromkeys(v for v, _ in clause))
        lits = [(vs.index(v), a) for v, a in clause]
        p.addConstraint(pc.FunctionConstraint(lambda *vals, lits=lits: any(vals[i] == a for i, a in lits)), vs)
    t0 = time.perf_counter()
    sol = p.getSolution()
    dt = time.perf_counter() - t0
    q.put({"status": "SAT" if sol else "UNSAT", "time_s": dt,
           "valid": bool(sol) and inst.is_solution([sol[v] for v in range(inst.n)])})


def python_constraint_first_solution(inst: Instance, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_python_constraint_worker, args=(inst, q), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"status": "TIMEOUT", "time_s": timeout, "valid": False}
    try:
        return q.get(timeout=1)
    except Exception:
        return {"status": "ERROR", "time_s": time.perf_counter() - t0, "valid": False}


def run(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"benchmark": "solver", "size": args.size, "count": args.count,
                           "node_limit": args.node_limit, "time_limit_s": args.time_limit}
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    per_family: dict[str, Any] = {}
    for fam in families:
        insts = [generate(fam, args.size, i, args.seed) for i in range(args.count)]
        per_family[fam] = {h: _summary([_run(i, h, "mac", args) for i in insts]) for h in BASELINES}
    out["per_family_mac"] = per_family

    rb = [generate("rb", "large", i, args.seed, {"n": args.rb_n}) for i in range(args.rb_count)]
    rb_out: dict[str, Any] = {"n": args.rb_n, "count": args.rb_count, "p": rb[0].meta["p"], "d": rb[0].meta["d"],
                              "m": rb[0].meta["m"]}
    for prop in ("mac", "fc"):
        for h in ("lex", "mrv", "dom-deg", "dom-wdeg"):
            runs = [_run(i, h, prop, args) for i in rb]
            s = _summary(runs)
            s["censored"] = sum(r["status"] == "UNKNOWN" for r in runs)
            rb_out[f"{prop}/{h}"] = s
    base = rb_out["mac/dom-wdeg"]["median_nodes"]
    rb_out["median_node_ratio_vs_mac_dom_wdeg"] = {k: round(v["median_nodes"] / base, 2) for k, v in rb_out.items()
                                                   if isinstance(v, dict) and "median_nodes" in v}
    out["rb_threshold"] = rb_out

    if not args.skip_python_constraint:
        out["vs_python_constraint"] = _vs_python_constraint(families, args)
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


def _vs_python_constraint(families: list[str], args: argparse.Namespace) -> dict[str, Any]:
    try:
        import constraint  # noqa: F401
    except ImportError:
        return {"skipped": "python-constraint is not installed (pip install python-constraint)"}
    res: dict[str, Any] = {"setting": "time to first solution, small instances; ours: MAC + dom/wdeg; "
                                      "python-constraint: BacktrackingSolver(forwardcheck=True)"}
    for fam in families:
        ours, theirs, agree = [], [], 0
        for i in range(args.count):
            inst = generate(fam, "small", i, args.seed)
            r = Solver(inst, heuristic="dom-wdeg", propagation="mac", time_limit=args.time_limit).solve()
            p = python_constraint_first_solution(inst, args.time_limit)
            ours.append(r.stats.time_s)
            theirs.append(p["time_s"])
            agree += p["status"] in ("TIMEOUT", r.status) and (p["status"] != "SAT" or p["valid"])
        mo, mt = statistics.median(ours), statistics.median(theirs)
        res[fam] = {"ours_median_s": round(mo, 5), "python_constraint_median_s": round(mt, 5),
                    "speedup": round(mt / mo, 1) if mo > 0 else None, "answers_agree": f"{agree}/{args.count}",
                    "python_constraint_timeouts": sum(t >= args.time_limit for t in theirs)}
    return res
