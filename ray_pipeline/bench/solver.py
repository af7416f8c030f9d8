"""`ray-pipeline bench solver`: the solver's speed and each heuristic's tree size, measured side by side.

Four parts, one JSON object:
- head to head on Model RB near the threshold (n=35 and n=50 by default), the same instances for every side:
  the native core (MAC + dom/wdeg) vs the pure-Python core it replaced (tests/reference/py_solver.py, found
  in a source checkout; node counts must be identical) vs OR-Tools CP-SAT with one worker (what a user would
  pick instead; `AddAllowedAssignments` per constraint) vs python-constraint (backtracking + forward checking):
  time to answer and MAC nodes/s, answers cross-checked. The pure-Python core is slow: past `--py-node-limit`
  nodes it is cut and compared on nodes/s over the same prefix of the search (the native core re-run with
  that limit, identical node count checked);
- per family: median nodes, median time and nodes/s of every baseline heuristic (MAC);
- Model RB at the threshold (n >= 35 by default): median nodes of lex, MRV, dom/deg, dom/wdeg, FC and MAC;
- time to first solution against python-constraint on small instances of every family.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
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
    p.add_argument("--vs-n", default="35,50", help="Model RB sizes of the head-to-head comparison")
    p.add_argument("--vs-count", type=int, default=8, help="instances per size in the head-to-head comparison")
    p.add_argument("--py-node-limit", type=int, default=20_000,
                   help="nodes after which the pure-Python reference is cut (compared on nodes/s)")
    p.add_argument("--vs-time-limit", type=float, default=60.0, help="seconds per solve in the head-to-head")
    p.add_argument("--model", default=None, help="an exported model (.onnx): its per-decision cost in the search")


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
    try:
        sizes = [int(x) for x in args.vs_n.split(",") if x.strip()]
    except ValueError:
        print(f"error: --vs-n must be comma-separated integers, got {args.vs_n!r}", file=sys.stderr)
        return 2
    if args.vs_count < 1 or any(n < 5 for n in sizes):
        print("error: --vs-count must be >= 1 and every --vs-n >= 5", file=sys.stderr)
        return 2
    out["head_to_head_rb"] = {f"n={n}": head_to_head(n, args) for n in sizes}
    out["learned_decision_cost"] = learned_decision_cost(args)
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


# ------------------------------------------------------------------------------------------ head to head
def _reference_core():
    """The pure-Python core the native one replaced; it lives with the tests (a source checkout)."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "tests" / "reference" / "py_solver.py").exists():
        return None
    sys.path.insert(0, str(repo))  # `tests` is a package there
    try:
        return importlib.import_module("tests.reference.py_solver")
    finally:
        sys.path.remove(str(repo))


def _cpsat_worker(inst: Instance, time_limit: float, q: "mp.Queue") -> None:
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    m = cp_model.CpModel()
    xs = [m.NewIntVarFromDomain(cp_model.Domain.FromValues([a for a in range(d.bit_length()) if d >> a & 1]), f"x{v}")
          for v, d in enumerate(inst.domains)]
    for x, y, sup in inst.binary:
        m.AddAllowedAssignments([xs[x], xs[y]], [(a, b) for a in range(len(sup)) for b in range(sup[a].bit_length())
                                                 if sup[a] >> b & 1])
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = time_limit
    status = solver.Solve(m)
    dt = time.perf_counter() - t0  # model building included: a user pays it too
    name = {cp_model.OPTIMAL: "SAT", cp_model.FEASIBLE: "SAT", cp_model.INFEASIBLE: "UNSAT"}.get(status, "UNKNOWN")
    valid = name != "SAT" or inst.is_solution([solver.Value(x) for x in xs])
    q.put({"status": name, "time_s": dt, "valid": valid, "branches": solver.NumBranches()})


def cpsat_solve(inst: Instance, time_limit: float) -> dict[str, Any]:
    """CP-SAT in a child process: a fresh process per solve, as a user would run it, killable on time-out."""
    try:
        import ortools  # noqa: F401
    except ImportError:
        return {"status": "SKIPPED", "time_s": None, "valid": False}
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_cpsat_worker, args=(inst, time_limit, q), daemon=True)
    proc.start()
    try:
        res = q.get(timeout=time_limit + 60)
    except Exception:
        res = {"status": "ERROR", "time_s": None, "valid": False}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    return res


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 5) if xs else None


def head_to_head(n: int, args: argparse.Namespace) -> dict[str, Any]:
    insts = [generate("rb", "large", i, args.seed, {"n": n}) for i in range(args.vs_count)]
    ref = _reference_core()
    out: dict[str, Any] = {"instances": len(insts), "d": insts[0].meta["d"], "m": insts[0].meta["m"],
                           "p": round(insts[0].meta["p"], 4), "setting": "MAC + dom/wdeg, 2-way branching"}
    native = [Solver(i, time_limit=args.vs_time_limit).solve() for i in insts]
    nat_nodes = sum(r.stats.nodes for r in native)
    nat_time = sum(r.stats.time_s for r in native)
    out["native"] = {"median_time_s": _median([r.stats.time_s for r in native]),
                     "median_nodes": statistics.median(r.stats.nodes for r in native),
                     "nodes_per_s": round(nat_nodes / nat_time) if nat_time else None,
                     "answers": {s: sum(r.status == s for r in native) for s in ("SAT", "UNSAT", "UNKNOWN")}}
    if ref is None:
        out["python_reference"] = {"skipped": "tests/reference/py_solver.py not found (run from a source checkout)"}
    else:
        rows, same = [], 0
        for inst, full in zip(insts, native):
            p = ref.Solver(inst, node_limit=args.py_node_limit).solve()
            cut = p.status == "UNKNOWN"
            # the same search, to the same point: the native core with the reference's node limit
            nat = Solver(inst, node_limit=args.py_node_limit).solve() if cut else None
            same += (nat or full).stats.nodes == p.stats.nodes
            rows.append((p, nat, cut))
        py_nodes = sum(p.stats.nodes for p, _, _ in rows)
        py_time = sum(p.stats.time_s for p, _, _ in rows)
        nat_prefix_time = sum((nat or native[k]).stats.time_s for k, (_, nat, _) in enumerate(rows))
        finished = [k for k, (_, _, cut) in enumerate(rows) if not cut]
        out["python_reference"] = {
            "node_limit": args.py_node_limit, "finished": len(finished),
            "nodes_per_s": round(py_nodes / py_time) if py_time else None,
            "median_time_s_finished": _median([rows[k][0].stats.time_s for k in finished]),
            "identical_node_counts": f"{same}/{len(rows)}",
        }
        out["native_vs_python"] = {
            "solver_time_ratio_same_nodes": round(py_time / nat_prefix_time, 1) if nat_prefix_time else None,
            "nodes_per_s_ratio": round((nat_nodes / nat_time) / (py_nodes / py_time), 1) if nat_time and py_time else None,
        }
    cps = [cpsat_solve(i, args.vs_time_limit) for i in insts]
    agree = sum(c["status"] in ("UNKNOWN", r.status) and c["valid"] for c, r in zip(cps, native))
    out["cpsat_1_worker"] = {"median_time_s": _median([c["time_s"] for c in cps]),
                             "answers": {s: sum(c["status"] == s for c in cps) for s in ("SAT", "UNSAT", "UNKNOWN")},
                             "answers_agree": f"{agree}/{len(insts)}",
                             "median_branches": _median([c.get("branches") for c in cps])}
    ratios = [c["time_s"] / r.stats.time_s for c, r in zip(cps, native)
              if c.get("time_s") and r.stats.time_s > 0 and c["status"] != "UNKNOWN" and r.status != "UNKNOWN"]
    out["native_vs_cpsat"] = {"time_to_answer_ratio_geomean": round(_geomean(ratios), 1) if ratios else None,
                              "of": len(ratios)}
    if not args.skip_python_constraint:
        pcs = [python_constraint_first_solution(i, min(args.vs_time_limit, 30.0)) for i in insts]
        out["python_constraint"] = {"median_time_s": _median([p["time_s"] for p in pcs]),
                                    "timeouts": sum(p["status"] == "TIMEOUT" for p in pcs),
                                    "time_cap_s": min(args.vs_time_limit, 30.0)}
    return out


def _geomean(xs: list[float]) -> float:
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# ------------------------------------------------------------------------------------------ learned heuristic
def _beside_dom_wdeg(insts, scorer) -> dict[str, Any]:
    """dom/wdeg and the learned heuristic with a scorer that keeps dom/wdeg's choice, on the same instances
    (min of 3 runs each): the time difference per decision is what a learned decision adds."""
    t = {"base": 0.0, "run": 0.0, "features": 0.0, "model": 0.0, "same": 0, "calls": 0}
    for inst in insts:
        b = min((Solver(inst, node_limit=20_000).solve() for _ in range(3)), key=lambda r: r.stats.time_s)
        c = min((Solver(inst, heuristic="learned", scorer=scorer, top_k=8, node_limit=20_000).solve()
                 for _ in range(3)), key=lambda r: r.stats.time_s)
        t["same"] += b.stats.nodes == c.stats.nodes
        t["base"] += b.stats.time_s
        t["run"] += c.stats.time_s
        t["features"] += c.stats.feature_time_s
        t["model"] += c.stats.model_time_s
        t["calls"] += c.stats.model_calls
    return t


def _native_decision_cost(scorer, insts) -> dict[str, Any]:
    """A native scorer's (the MLP's, the graph scorer's) whole cost per decision, end to end: the model with its
    score layer zeroed does all the same arithmetic but scores every candidate 0, so the search keeps dom/wdeg's
    tree; (its time - dom/wdeg's time) / decisions is everything a learned decision adds. The real model's
    in-core timers are reported too."""
    t = _beside_dom_wdeg(insts, scorer.zeroed())
    calls = t["calls"]
    per = (lambda s: round(1e6 * s / calls, 2)) if calls else (lambda s: None)
    return {"runtime": "native", "native_same_tree_as_dom_wdeg": f"{t['same']}/{len(insts)}", "native_calls": calls,
            "native_features_us_per_decision": per(t["features"]), "model_us_per_decision": per(t["model"]),
            "total_us_per_decision": per(t["run"] - t["base"])}


def learned_decision_cost(args: argparse.Namespace) -> dict[str, Any]:
    """What one learned decision costs at 8 candidates, model called at every decision (the worst case).

    A constant scorer keeps dom/wdeg's choice (first maximum), so its tree is dom/wdeg's: the time difference
    per call is the whole plumbing (native feature rows, the call into Python, the numpy array). With
    --model, the model's own time per call (ONNX Runtime, measured around the scorer) is added."""
    import numpy as np

    insts = [generate("rb", "large", i, args.seed, {"n": 35}) for i in range(min(args.vs_count, 4))]
    const = lambda x: np.zeros(len(x), dtype=np.float32)  # noqa: E731
    t = _beside_dom_wdeg(insts, const)
    base_t, plumb_t, feat_t, same, calls = t["base"], t["run"], t["features"], t["same"], t["calls"]
    out: dict[str, Any] = {
        "instances": len(insts), "top_k": 8, "calls": calls, "same_tree_as_dom_wdeg": f"{same}/{len(insts)}",
        "plumbing_us_per_decision": round(1e6 * (plumb_t - base_t) / calls, 2) if calls else None,
        "native_features_us_per_decision": round(1e6 * feat_t / calls, 2) if calls else None,
    }
    if args.model:
        from ..inference import ModelError, load_scorer

        try:
            scorer = load_scorer(args.model)
        except ModelError as e:
            return {**out, "model_error": str(e)}
        out["model"] = str(args.model)
        if getattr(scorer, "native", None) is not None:  # scored inside the core: no plumbing to add
            out.update(_native_decision_cost(scorer, insts))
            return out
        r = Solver(insts[0], heuristic="learned", scorer=scorer, top_k=8, node_limit=20_000).solve()
        model_us = 1e6 * r.stats.model_time_s / max(1, r.stats.model_calls)
        out["model_us_per_decision"] = round(model_us, 2)
        if out["plumbing_us_per_decision"] is not None:
            out["total_us_per_decision"] = round(out["plumbing_us_per_decision"] + model_us, 2)
    return out
