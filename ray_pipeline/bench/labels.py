"""`ray-pipeline bench labels [CONFIG]`: how much of a probe label is signal a model could learn.

Each labelled state (data.label's sampling, budget and top-k, on fresh instances of one family/size from
TUNING_INDEX_OFFSET) is probed again on `--copies` copies of its instance with the constraints listed in other
orders (augment.reordered): same domains, weights, candidates and features, other tie-breaks. Whatever moves
between copies is noise to any model of the state. Prints JSON: the noise share of the spread of a state's log
costs, and the log regret (and top-1) on the original order of dom/wdeg's choice and of the candidate with the
lowest mean log cost over the copies -- an estimate of the best any model of the state could do (the expert,
which probes the original itself, has regret 0). Binary constraints only (Model RB, colouring, N-Queens, Sudoku).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any, Optional

import numpy as np

from ..config import load_config
from .pool import flatten, spawn_map


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="configs/quick.yaml")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    p.add_argument("--family", default="rb")
    p.add_argument("--size", default="large")
    p.add_argument("--count", type=int, default=20, help="fresh instances")
    p.add_argument("--copies", type=int, default=4, help="reordered copies each state is probed on again")
    p.add_argument("--workers", type=int, default=2, help="processes, one instance each at a time")


def noisy_costs(job: tuple[str, str, int, int, int, Any]) -> list[np.ndarray]:
    """One instance's informative states: [1 + copies, n_cands] probe costs, the original order first."""
    from ..data import augment, steps
    from ..problems.instance import derive_seed

    family, size, index, seed, copies, data = job
    inst = steps.build_original(family, size, index, seed, {})
    reordered = [augment.reordered(inst, random.Random(derive_seed(seed, inst.name, "reorder", k)))
                 for k in range(copies)]
    try:
        states = steps.informative_states(inst, data, seed, copies=reordered)
    except Exception as e:
        raise RuntimeError(f"bench labels: instance {inst.name} (index {index}, seed {seed}): {e}") from e
    return [np.array([s["costs"], *s["costs_on_copies"]], dtype=np.float64) for s in states]


def noise_summary(costs: list[np.ndarray], budget: Optional[int] = None) -> dict[str, Any]:
    """From each state's [1 + copies, n] costs (the original order first): the noise share of the spread of its
    log costs (noise: a candidate's variance across orders; signal: the variance of the candidates' true means,
    estimated without bias as var(row means) - noise / rows, clipped at 0 only in total), and regret/top-1 on the
    original order of dom/wdeg's choice (candidate 0), of the argmin of one copy, and of the argmin of the
    copies' mean. With `budget`, the share of censored probes (over it: they tie and look noise-free)."""
    if not costs or min(len(c) for c in costs) < 2:
        raise ValueError("noise_summary needs states probed on at least one copy")
    noise, signal, out = [], [], {"dom_wdeg": ([], []), "one_copy": ([], []), "mean_of_copies": ([], [])}
    for c in costs:
        log = np.log(np.maximum(c, 1.0))
        rows = len(log)
        within = log.var(axis=0, ddof=1).mean()
        noise.append(within)
        signal.append(log.mean(axis=0).var(ddof=1) - within / rows)
        orig = log[0]
        for key, pick in (("dom_wdeg", 0), ("one_copy", int(np.argmin(log[1]))),
                          ("mean_of_copies", int(np.argmin(log[1:].mean(axis=0))))):
            out[key][0].append(orig[pick] - orig.min())
            out[key][1].append(orig[pick] == orig.min())
    n, s = float(np.mean(noise)), max(float(np.mean(signal)), 0.0)
    return {"states": len(costs), "copies": min(len(c) for c in costs) - 1,
            "noise_share": round(n / (n + s), 4) if n + s > 0 else None,
            "censored_share": None if budget is None else
            round(float(np.mean(np.concatenate([c.ravel() for c in costs]) > budget)), 4),
            **{k: {"log_regret": round(float(np.mean(r)), 4), "top1": round(float(np.mean(t)), 4)}
               for k, (r, t) in out.items()}}


def run(args: argparse.Namespace) -> int:
    from ..data.steps import TUNING_INDEX_OFFSET
    from ..problems.generators import params_for

    cfg = load_config(args.config, list(args.overrides))
    try:
        for flag, v in (("--count", args.count), ("--copies", args.copies), ("--workers", args.workers)):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        params_for(args.family, args.size)  # an unknown family or size fails here, by name
        if args.family == "ksat":
            raise ValueError("--family ksat: clauses are not reordered (their weights are not mapped); "
                             "families with binary constraints only")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = [(args.family, args.size, TUNING_INDEX_OFFSET + i, cfg.run.seed, args.copies, cfg.data)
            for i in range(args.count)]
    costs = flatten(spawn_map(noisy_costs, jobs, args.workers))
    if not costs:
        print("error: no informative state on these instances", file=sys.stderr)
        return 2
    lab = cfg.data.label
    print(json.dumps({"benchmark": "labels", "family": args.family, "size": args.size, "instances": args.count,
                      "tuning_index_offset": TUNING_INDEX_OFFSET, "seed": cfg.run.seed,
                      "label": {"node_budget": lab.node_budget, "top_k": lab.top_k, "max_depth": lab.max_depth,
                                "states_per_instance": lab.states_per_instance},
                      **noise_summary(costs, lab.node_budget)}, indent=1))
    return 0
