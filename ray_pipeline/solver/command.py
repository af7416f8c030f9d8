"""`ray-pipeline solve PATH ...`: solve one instance file; `--json` makes the LAST stdout line one JSON object."""
from __future__ import annotations

import argparse
import json
import sys

from .core import HEURISTICS, PROPAGATIONS, VALUE_ORDERS, Solver


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="instance file: DIMACS .cnf, DIMACS .col (with --colors K, or FILE.col:K), or .json")
    p.add_argument("--format", choices=["cnf", "col", "json"], default=None, help="default: from the suffix")
    p.add_argument("--colors", type=int, default=None, help="number of colours for a .col graph")
    p.add_argument("--strict", action="store_true",
                   help="refuse a .col graph with self-loop edges (default: drop them with a warning)")
    p.add_argument("--heuristic", choices=HEURISTICS, default="dom-wdeg")
    p.add_argument("--propagation", choices=PROPAGATIONS, default="mac")
    p.add_argument("--value-order", choices=VALUE_ORDERS, default="lex")
    p.add_argument("--model", default=None, help="scorer for --heuristic learned: model.onnx (or a model.pt)")
    p.add_argument("--top-k", type=int, default=8, help="learned: score only the best K candidates by dom/wdeg")
    p.add_argument("--max-depth", type=int, default=None, help="learned: call the model only up to this depth")
    p.add_argument("--min-margin", type=float, default=0.0,
                   help="learned: leave dom/wdeg's choice unless another candidate scores higher by more than this")
    p.add_argument("--probe-budget", type=int, default=1000,
                   help="expert: nodes per probe (--top-k candidates probed at each decision up to --max-depth)")
    p.add_argument("--node-limit", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--restarts", action="store_true", help="Luby restarts (weights are kept)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random heuristic")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    from ..problems.instance import InstanceError
    from ..problems.readers import read_instance

    def fail(msg: str) -> int:
        if args.json:
            print(json.dumps({"status": "ERROR", "error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.heuristic == "learned" and not args.model:
        return fail("--heuristic learned needs --model PATH (an exported model.onnx)")
    if args.model and args.heuristic != "learned":
        return fail("--model is only used with --heuristic learned")
    for name in ("node_limit", "top_k", "max_depth", "probe_budget"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "max_depth" else 1):
            return fail(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.time_limit is not None and args.time_limit <= 0:
        return fail(f"--time-limit must be positive, got {args.time_limit}")
    try:
        inst = read_instance(args.path, fmt=args.format, colors=args.colors, strict=args.strict)
    except InstanceError as e:
        return fail(str(e))
    scorer = None
    if args.model:
        from ..inference import ModelError, load_scorer
        try:
            scorer = load_scorer(args.model)
        except ModelError as e:
            return fail(str(e))
    solver = Solver(inst, heuristic=args.heuristic, propagation=args.propagation, value_order=args.value_order,
                    node_limit=args.node_limit, time_limit=args.time_limit, seed=args.seed, scorer=scorer,
                    top_k=args.top_k, max_depth=args.max_depth, min_margin=args.min_margin, restarts=args.restarts,
                    probe_budget=args.probe_budget)
    result = solver.solve()
    one_based = inst.family in ("cnf", "col")
    assignment = {}
    if result.assignment is not None:
        assignment = {str(v + 1 if one_based else v): a for v, a in enumerate(result.assignment)}
    out = {"status": result.status, "instance": inst.name, "heuristic": args.heuristic,
           "propagation": args.propagation, "assignment": assignment, "stats": result.stats.to_dict()}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        st = result.stats
        print(f"{inst.name}: {result.status}  nodes={st.nodes} backtracks={st.backtracks} "
              f"time={st.time_s:.3f}s model_calls={st.model_calls}" +
              (f" probes={st.probes} probe_nodes={st.probe_nodes}" if st.probes else ""))
        if result.assignment is not None and inst.family == "cnf":
            print("v " + " ".join(str(v + 1 if a else -(v + 1)) for v, a in enumerate(result.assignment)) + " 0")
        elif result.assignment is not None:
            print("assignment: " + " ".join(f"{k}={v}" for k, v in assignment.items()))
    return 0
