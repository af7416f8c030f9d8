"""`ray-pipeline bench learned [CONFIG]`: choose the learned heuristic's settings (evaluate.learned top_k,
max_depth, min_margin) on a tuning set, never on the held-out split; and `ray-pipeline bench heldout [CONFIG]`:
measure the chosen setting on as many held-out instances as it takes to settle the question.

Tuning instances are fresh instances of one family/size (default: Model RB n=35, the held-out kind) with indices
from TUNING_INDEX_OFFSET, so they share no (family, size, index) with the training or held-out instances.
Held-out instances are built exactly as the generate stage builds data.generate.heldout (indices from
HELDOUT_INDEX_OFFSET, same seed): the first ones are the run's held-out instances, the rest more of the same kind,
never trained or tuned on. The evaluate stage benchmarks a handful (its report's table); a 5% effect needs ~100.
A family/size the config does not hold out (`--size xxlarge`: Model RB n=50) is built the same way, none of it
the run's own, and the JSON says so (`in_config_heldout`, `note`; see `heldout_params`).
Per instance, in one process, interleaved rounds of dom/wdeg and the other runs; node counts are deterministic,
wall time is the minimum over the rounds and includes features and model calls. Prints JSON: per run the
geometric-mean (95% bootstrap interval) / median node and time ratios vs dom/wdeg, wins and losses, the same by
dom/wdeg's answer (SAT / UNSAT), and the share of the learned runs' time spent on features + model calls.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Optional

from .. import atomic
from ..config import load_config
from .pool import flatten, spawn_map

_SCORER = None


def _add_common(p: argparse.ArgumentParser, count: int, count_help: str, node_limit: Any, time_limit: Any) -> None:
    p.add_argument("config", nargs="?", default="configs/quick.yaml")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    p.add_argument("--model", help="ONNX or model.pt (default: the file the evaluate stage would run, from "
                   "evaluate.learned and the run's export summary)")
    p.add_argument("--family", default="rb")
    p.add_argument("--size", default="large", help="a size of the family (problems.SIZE_DEFAULTS); bench heldout "
                   "also takes one data.generate.heldout does not list, built the same way (its JSON notes it)")
    p.add_argument("--count", type=int, default=count, help=count_help)
    p.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds; the minimum time is kept")
    p.add_argument("--node-limit", type=int, default=node_limit)
    p.add_argument("--time-limit", type=float, default=time_limit)
    p.add_argument("--workers", type=int, default=2, help="processes, one instance each at a time")
    p.add_argument("--rows", type=Path, help="also write the per-instance rows (JSON) here")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p, 30, "tuning instances", 60_000, 60.0)
    p.add_argument("--top-k", default="4,8", help="comma-separated candidates the model ranks")
    p.add_argument("--max-depth", default="0,1,2", help="comma-separated depths up to which the model is called")
    p.add_argument("--min-margin", default="0", help="comma-separated margins by which the model must prefer "
                   "another candidate to overrule dom/wdeg's choice")


def add_heldout_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p, 100, "held-out instances (the run's own come first)", None, None)
    p.set_defaults(node_limit=None, time_limit=None)  # None: the config's evaluate.node_limit / time_limit_s
    p.add_argument("--expert", action="store_true", help="also run the expert heuristic (evaluate.expert: probes "
                   "at every decision near the root; the ceiling of imitating its labels, at 10-100x the time)")


def _values(flag: str, text: str, kind: type, least: float) -> list:
    try:
        vals = [kind(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated {kind.__name__}s, got {text!r}") from None
    if min(vals) < least:
        raise ValueError(f"{flag} values must be >= {least}, got {text!r}")
    return vals


def _evaluated_model(cfg) -> Path:
    from ..evaluate.stage import learned_model_path
    from ..paths import RunPaths

    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    summary = paths.models / "export_summary.json"
    export = json.loads(summary.read_text()) if summary.exists() else {}
    return learned_model_path(cfg.evaluate.learned, paths, export)


def heldout_params(cfg, family: str, size: str) -> tuple[dict[str, Any], Optional[str]]:
    """The generator knobs of family/size's held-out instances (tuning instances are drawn the same way), and a
    note when data.generate.heldout does not list family/size (None when it does).

    Listed: that entry's knobs, so the first instances are the run's own held-out ones. Not listed (e.g. RB
    xxlarge, n=50, measured against a run that held out n=35): the same construction (indices from
    HELDOUT_INDEX_OFFSET, the run's seed) at the size's own defaults, with the family's knobs (FAMILY_DEFAULTS
    keys: alpha, r, p, forced for RB; never a size knob such as n) taken from the family's held-out entries.
    Such instances are still never trained or tuned on (no stage builds an index that high), but the run's
    evaluate stage saw none of them; the note says so and names the sizes the run trained on."""
    from ..problems.generators import FAMILY_DEFAULTS, params_for

    params_for(family, size)  # an unknown family or size fails here, by name
    heldout = cfg.data.generate.heldout
    spec = next((s for s in heldout if s.family == family and size in s.sizes), None)
    if spec is not None:
        return dict(spec.params), None
    knob_sets = {json.dumps({k: v for k, v in s.params.items() if k in FAMILY_DEFAULTS[family]}, sort_keys=True)
                 for s in heldout if s.family == family}
    if len(knob_sets) > 1:
        raise ValueError(f"data.generate.heldout lists {family} with different knobs ({', '.join(sorted(knob_sets))})"
                         f" and no {family}/{size}: add a {family}/{size} entry to say which")
    params = json.loads(knob_sets.pop()) if knob_sets else {}
    trained = sorted({z for s in cfg.data.generate.families if s.family == family for z in s.sizes})
    note = (f"{family}/{size} is not in data.generate.heldout: instances built the same way (indices from "
            f"HELDOUT_INDEX_OFFSET, seed {cfg.run.seed}, knobs {params or 'the generator defaults'}), never trained "
            f"or tuned on, none of them evaluated by the run; {family} sizes the run trained on: "
            f"{', '.join(trained) or 'none'}")
    return params, note


def _load(model: str) -> None:
    global _SCORER
    from ..inference import load_scorer

    _SCORER = load_scorer(model)


def _solve(job: tuple[str, str, int, int, dict[str, Any], list[tuple], str, str, int, int, float]
           ) -> list[dict[str, Any]]:
    from ..evaluate.speedup import solve_rounds
    from ..problems import generate

    family, size, index, seed, params, runs, split, propagation, repeats, node_limit, time_limit = job
    inst = generate(family, size, index, seed, params)
    meta = {"split": split, "family": family, "size": size}
    return solve_rounds(inst, inst.name, meta, runs, propagation, node_limit, time_limit, _SCORER, repeats)


def _measure(args: argparse.Namespace, cfg, model: str, params: dict[str, Any], split: str, offset: int,
             runs: list[tuple], node_limit: int, time_limit: float) -> dict[str, Any]:
    """Every instance in a spawned worker (pool.spawn_map); the summary of evaluate's speedup benchmark, plus
    inference share."""
    from ..evaluate.speedup import summarize

    jobs = [(args.family, args.size, offset + i, cfg.run.seed, params, runs, split, cfg.evaluate.propagation,
             args.repeats, node_limit, time_limit) for i in range(args.count)]
    rows = flatten(spawn_map(_solve, jobs, args.workers, initializer=_load, initargs=(model,)))
    if args.rows:
        atomic.write_json(args.rows.resolve(), rows)
    summary = summarize(rows, "dom-wdeg")[split]
    for s in summary.values():
        if isinstance(s, dict):
            s["inference_share"] = round((s["model_time_s"] + s["feature_time_s"]) / s["total_time_s"], 4) \
                if s["total_time_s"] else None
    return summary


def _check(args: argparse.Namespace, cfg, model: str) -> tuple[dict[str, Any], Optional[str]]:
    """Every bad argument fails here, named, before any worker starts. Returns `heldout_params`."""
    from ..problems.generators import params_for

    for flag, v in (("--count", args.count), ("--repeats", args.repeats), ("--workers", args.workers)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if args.rows and not args.rows.resolve().parent.is_dir():  # found out now, not after the whole measurement
        raise ValueError(f"--rows {args.rows}: no such directory {args.rows.resolve().parent}")
    params, note = heldout_params(cfg, args.family, args.size)
    params_for(args.family, args.size, params)  # unknown knob
    _load(model)  # ModelError is a ValueError and names the file
    if getattr(_SCORER, "reads_graph", False):  # a graph scorer: binary constraints only (ray_pipeline.graph)
        from ..problems import generate

        if generate(args.family, args.size, 0, cfg.run.seed, params).clauses:
            raise ValueError(f"{model}: a graph scorer reads binary constraints only; --family {args.family} has "
                             "clauses")
    return params, note


def run(args: argparse.Namespace) -> int:
    from ..data.steps import TUNING_INDEX_OFFSET

    cfg = load_config(args.config, list(args.overrides))
    model = args.model or str(_evaluated_model(cfg))
    try:
        top_ks = _values("--top-k", args.top_k, int, 2)
        depths = _values("--max-depth", args.max_depth, int, 0)
        margins = _values("--min-margin", args.min_margin, float, 0)
        params, _ = _check(args, cfg, model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = [("dom-wdeg", "dom-wdeg", {})] + [
        (f"learned k={k} d={d} m={m:g}", "learned", {"top_k": k, "max_depth": d, "min_margin": m})
        for k, d, m in itertools.product(top_ks, depths, margins)]
    summary = _measure(args, cfg, model, params, "tuning", TUNING_INDEX_OFFSET, runs, args.node_limit,
                       args.time_limit)
    ranked = [n for n in summary if n.startswith("learned") and summary[n]["geomean_time_ratio"] is not None]
    best = min(ranked, key=lambda n: summary[n]["geomean_time_ratio"], default=None)
    print(json.dumps({"benchmark": "learned", "model": model, "family": args.family, "size": args.size,
                      "tuning_index_offset": TUNING_INDEX_OFFSET, "seed": cfg.run.seed,
                      "propagation": cfg.evaluate.propagation, "repeats": args.repeats,
                      "workers": args.workers, "results": summary, "best_by_time": best}, indent=1))
    return 0


def run_heldout(args: argparse.Namespace) -> int:
    from ..data.steps import HELDOUT_INDEX_OFFSET

    cfg = load_config(args.config, list(args.overrides))
    model = args.model or str(_evaluated_model(cfg))
    try:
        params, note = _check(args, cfg, model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if note:
        print(f"note: {note}", file=sys.stderr)
    e = cfg.evaluate
    node_limit = e.node_limit if args.node_limit is None else args.node_limit
    time_limit = e.time_limit_s if args.time_limit is None else args.time_limit
    learned = e.learned
    runs = [("dom-wdeg", "dom-wdeg", {}), ("dom-deg", "dom-deg", {}), ("learned", "learned", learned.solver_kwargs())]
    if args.expert:
        runs.append(("expert", "expert", e.expert.solver_kwargs()))
    summary = _measure(args, cfg, model, params, "heldout", HELDOUT_INDEX_OFFSET, runs, node_limit, time_limit)
    print(json.dumps({"benchmark": "heldout", "model": model, "family": args.family, "size": args.size,
                      "params": params, "in_config_heldout": note is None, "note": note,
                      "heldout_index_offset": HELDOUT_INDEX_OFFSET, "seed": cfg.run.seed,
                      "propagation": e.propagation,
                      "learned": learned.solver_kwargs(),
                      "expert": e.expert.solver_kwargs() if args.expert else None,
                      "node_limit": node_limit, "time_limit_s": time_limit, "repeats": args.repeats,
                      "workers": args.workers, "results": summary}, indent=1))
    return 0
