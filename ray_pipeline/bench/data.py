"""`ray-pipeline bench data [CONFIG]`: dataset throughput with 1 and 2 Ray Data workers, side by side.

The same instance specs go through the same Ray Data pipeline (generate -> trace -> label -> drop) on one
embedded Ray, with 1 and with 2 worker actors, in --rounds alternating rounds; instances/s, labelled
states/s and the ratio, as medians over rounds with each round's figures beside them.
Beside it, the machine's own ceiling: the same pure steps in 1 and in 2 plain processes, no Ray at all (two
busy cores share caches and clock: on the 2-vCPU machines here that ratio is itself below 2).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from ..config import load_config


def _steps(specs: list[dict], data_json: str) -> int:
    """generate -> trace -> label for these specs in this process (what one worker runs for a block); states."""
    from ..config import DataSection
    from ..data import steps

    data = DataSection.model_validate_json(data_json)
    n = 0
    for spec in specs:
        inst = steps.build_instance(spec)
        trace = steps.trace_instance(inst, data)
        n += len(steps.label_instance(inst, trace, data, spec["base_seed"], spec["heldout"])[0])
    return n


def _rounds(build, rounds: int, count=lambda result: result) -> dict:
    """`build(n)` (n = 1 or 2 workers) timed in `rounds` alternating rounds, 1-then-2 and 2-then-1 in turn, so a
    drift in the machine's speed (another tenant, clock) is charged to both sides alike; `count(result)` gives
    its labelled states, outside the timing (the benchmark's own bookkeeping is not the pipeline's work).
    Medians over rounds: one round's ratio swings with the machine (1.64-1.91x here)."""
    out = []
    for r in range(rounds):
        wall, states = {}, {}
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            t0 = time.perf_counter()
            result = build(n)
            wall[n] = time.perf_counter() - t0
            states[n] = count(result)
        assert states[1] == states[2], "1 and 2 workers labelled different states"
        out.append({"order": [1, 2] if r % 2 == 0 else [2, 1], "states": states[1],
                    "wall_s": {"1": round(wall[1], 2), "2": round(wall[2], 2)}, "speedup": round(wall[1] / wall[2], 3)})
    ratios = [r["speedup"] for r in out]
    return {"speedup_median": round(statistics.median(ratios), 3), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "rounds": out}


def _ceiling(specs: list[dict], data, rounds: int) -> dict:
    """The same work without Ray: serially in one process, then split over two (interleaved specs, so both
    halves cost about the same)."""
    import multiprocessing as mp

    data_json = data.model_dump_json()
    ctx = mp.get_context("spawn")  # a clean child: no Ray state forked from this process
    with ctx.Pool(2) as pool:
        pool.apply(_steps, ([], data_json))  # warm-up: imports in both children
        pool.apply(_steps, ([], data_json))

        def build(n: int) -> int:
            return sum(pool.starmap(_steps, [(specs[i::n], data_json) for i in range(n)]))

        return _rounds(build, rounds)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    from ..data import ray_data, steps
    from ..runtime import init_ray, shutdown_ray

    if args.scale < 1 or args.instances_per_block < 1 or args.rounds < 1:
        print("error: --scale, --instances-per-block and --rounds must be >= 1", file=sys.stderr)
        return 2
    # The config's Model RB families (its bulk) times --scale, no augmentation, blocks of --instances-per-block.
    # Measured on 2 CPUs (README, dataset stage): each worker actor starts in ~2 s, a fixed cost per build, so
    # a short benchmark measures start-up; blocks of 30 (~2.5 s of work) keep the last blocks' imbalance small.
    fams = [f for f in cfg.data.generate.families if f.family == "rb"] or cfg.data.generate.families[:1]
    data = cfg.data.model_copy(update={
        "generate": cfg.data.generate.model_copy(update={
            "families": [f.model_copy(update={"count": max(12, f.count) * args.scale}) for f in fams],
            "heldout": []}),
        "augment": cfg.data.augment.model_copy(update={"factor": 1}),
        "instances_per_block": args.instances_per_block})
    specs = steps.instance_specs(data, cfg.run.seed)
    # No dashboard: Ray Data needs no State API (Tune+Train do), and on 2 CPUs the dashboard's processes take
    # their share from the two workers (with tasks of 60 instances: 1.78x with it, 1.92x without).
    info = init_ray(cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_cpus": 2,
                                                                              "include_dashboard": False})}))
    out = {"benchmark": "data", "instances": len(specs), "instances_per_block": data.instances_per_block,
           "scale": args.scale, "rounds": args.rounds, "dashboard": False,
           "families": [f"{f.family}:{','.join(f.sizes)}" for f in fams],
           "label": cfg.data.label.model_dump(), "cluster_cpus": info.num_cpus}
    try:
        # warm-up: one build, so the package's files and the native module are in the page cache (each build
        # starts its own worker actors: their start-up, ~2 s, is in every timed build)
        list(ray_data.build(specs[:2 * data.instances_per_block], data, workers=2))

        def build(n: int) -> list[dict]:
            return list(ray_data.build(specs, data, workers=n))

        def count(rows: list[dict]) -> int:  # parsing every row's states takes ~2 s at the default scale
            return sum(len(json.loads(r["states_json"])) + r["dropped_states"] for r in rows)

        ray_rounds = _rounds(build, args.rounds, count)
    finally:
        if info.started:
            shutdown_ray()
    walls = {w: round(statistics.median(r["wall_s"][w] for r in ray_rounds["rounds"]), 2) for w in ("1", "2")}
    states = ray_rounds["rounds"][0]["states"]
    out["runs"] = {w: {"wall_s": walls[w], "instances_per_s": round(len(specs) / walls[w], 3),
                       "labelled_states_per_s": round(states / walls[w], 3), "states": states} for w in walls}
    out["speedup_2_vs_1"] = ray_rounds["speedup_median"]
    out["speedup_2_vs_1_range"] = [ray_rounds["speedup_min"], ray_rounds["speedup_max"]]
    out["rounds"] = ray_rounds["rounds"]
    out["machine_ceiling_no_ray"] = _ceiling(specs, data, args.rounds)
    out["share_of_ceiling"] = round(out["speedup_2_vs_1"] / out["machine_ceiling_no_ray"]["speedup_median"], 3)
    print(json.dumps(out, indent=1))
    return 0
