"""`ray-pipeline solve PATH ...`: solve one instance file; `--json` makes the LAST stdout line one JSON object."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .core import HEURISTICS, PROPAGATIONS, VALUE_ORDERS, Solver


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="instance file: DIMACS .cnf, DIMACS .col (with --colors K, or FILE.col:K), or .json")
    p.add_argument("--format", choices=["cnf", "col", "json"], default=None, help="default: from the suffix")
    p.add_argument("--colors", type=int, default=None, help="number of colours for a .col graph")
    p.add_argument("--strict", action="store_true",
                   help="refuse a .col graph with self-loop edges (default: drop them with a warning)")
    p.add_argument("--heuristic", choices=HEURISTICS, default="dom-wdeg")
    # with --model, the four settings below default to the ones stored in the model (how the pipeline evaluated
    # it; a file without them: the config's defaults, with a note); a flag given here wins
    p.add_argument("--propagation", choices=PROPAGATIONS, default=None,
                   help="default: the model's setting with --model, else mac")
    p.add_argument("--value-order", choices=VALUE_ORDERS, default="lex")
    p.add_argument("--model", default=None,
                   help="scorer for --heuristic learned: model.native.npz, model.onnx (or a model.pt)")
    p.add_argument("--top-k", type=int, default=None,
                   help="learned: score only the best K candidates by dom/wdeg (default: the model's setting with "
                        "--model, else 8)")
    p.add_argument("--max-depth", type=_depth, default=None,
                   help="learned: call the model only up to this depth, or 'all' (default: the model's setting with "
                        "--model, else all)")
    p.add_argument("--min-margin", type=float, default=None,
                   help="learned: leave dom/wdeg's choice unless another candidate scores higher by more than this "
                        "(default: the model's setting with --model, else 0)")
    p.add_argument("--probe-budget", type=int, default=None,
                   help="expert: nodes per probe (--top-k candidates probed at each decision up to --max-depth; "
                        "defaults: the config's evaluate.expert, i.e. top-8, depth <= 1, 5,000 nodes)")
    p.add_argument("--node-limit", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--restarts", action="store_true", help="Luby restarts (weights are kept)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random heuristic")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


# Without a model (every heuristic but `learned`) these flags default to what they always did; with one, to the
# setting stored in the model (learned_setting.choose).
_SEARCH_DEFAULTS: dict[str, Any] = {"top_k": 8, "max_depth": None, "min_margin": 0.0, "propagation": "mac"}


def _depth(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a depth (an integer >= 0) or 'all', got {text!r}") from None


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
    if args.probe_budget is not None and args.heuristic != "expert":
        return fail("--probe-budget is only used with --heuristic expert")
    for name in ("node_limit", "top_k", "probe_budget"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return fail(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.time_limit is not None and args.time_limit <= 0:
        return fail(f"--time-limit must be positive, got {args.time_limit}")
    if args.max_depth is not None and args.max_depth != "all" and args.max_depth < 0:
        return fail(f"--max-depth must be >= 0 or 'all', got {args.max_depth}")
    if args.min_margin is not None and args.min_margin < 0:
        return fail(f"--min-margin must be >= 0, got {args.min_margin}")
    try:
        inst = read_instance(args.path, fmt=args.format, colors=args.colors, strict=args.strict)
    except InstanceError as e:
        return fail(str(e))
    flags = {k: getattr(args, k) for k in _SEARCH_DEFAULTS if getattr(args, k) is not None}
    if flags.get("max_depth") == "all":
        flags["max_depth"] = None  # the solver's "always"
    defaults = dict(_SEARCH_DEFAULTS)
    if args.heuristic == "expert":  # one place for the expert's defaults: config.ExpertSection
        from ..config import ExpertSection

        defaults.update(ExpertSection().solver_kwargs())
        if args.probe_budget is not None:
            flags["probe_budget"] = args.probe_budget
    scorer, kwargs = None, {**defaults, **flags}
    if args.model:
        from ..inference import ModelError, load_for_search
        try:
            scorer, setting = load_for_search(args.model, flags)
        except ModelError as e:
            return fail(str(e))
        kwargs = setting.solver_kwargs()
        print(setting.describe(args.model), file=sys.stderr)  # stderr: the last stdout line stays the result
    try:  # e.g. a graph scorer on an instance with clauses
        solver = Solver(inst, heuristic=args.heuristic, value_order=args.value_order, node_limit=args.node_limit,
                        time_limit=args.time_limit, seed=args.seed, scorer=scorer, restarts=args.restarts, **kwargs)
    except ValueError as e:
        return fail(f"{args.model or args.heuristic}: {e}")
    result = solver.solve()
    one_based = inst.family in ("cnf", "col")
    assignment = {}
    if result.assignment is not None:
        assignment = {str(v + 1 if one_based else v): a for v, a in enumerate(result.assignment)}
    out = {"status": result.status, "instance": inst.name, "heuristic": args.heuristic,
           "propagation": kwargs["propagation"], "assignment": assignment, "stats": result.stats.to_dict()}
    if args.model:
        out["setting"] = setting.as_dict()
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
