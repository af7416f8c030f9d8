"""`ray-pipeline bench data [CONFIG]`: dataset throughput with 1 and 2 Ray Data workers, side by side.

The same instance specs go through the same Ray Data pipeline (generate -> trace -> label -> drop) twice on one
embedded Ray, once capped at 1 concurrent task and once at 2; instances/s, labelled states/s and the ratio.
Beside it, the machine's own ceiling: the same pure steps in 1 and in 2 plain processes, no Ray at all (two
busy cores share caches and clock: on the 2-vCPU machines here that ratio is itself below 2).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..config import load_config


def _steps(specs: list[dict], data_json: str) -> int:
    """generate -> trace -> label for these specs in this process (what one Ray Data task runs); states."""
    from ..config import DataSection
    from ..data import steps

    data = DataSection.model_validate_json(data_json)
    n = 0
    for spec in specs:
        inst = steps.build_instance(spec)
        trace = steps.trace_instance(inst, data)
        n += len(steps.label_instance(inst, trace, data, spec["base_seed"], spec["heldout"])[0])
    return n


def _ceiling(specs: list[dict], data) -> dict:
    """The same work without Ray: serially in one process, then split over two (interleaved specs, so both
    halves cost about the same)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a clean child: no Ray state forked from this process
    with ctx.Pool(2) as pool:
        pool.apply(_steps, ([], data.model_dump_json()))  # warm-up: imports in both children
        pool.apply(_steps, ([], data.model_dump_json()))
        t0 = time.perf_counter()
        states = pool.apply(_steps, (specs, data.model_dump_json()))
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = pool.starmap(_steps, [(specs[0::2], data.model_dump_json()), (specs[1::2], data.model_dump_json())])
        two = time.perf_counter() - t0
    assert sum(parts) == states
    return {"one_process_s": round(one, 2), "two_processes_s": round(two, 2), "speedup": round(one / two, 3)}


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    from ..data import ray_data, steps
    from ..runtime import init_ray, shutdown_ray

    if args.scale < 1 or args.instances_per_block < 1:
        print("error: --scale and --instances-per-block must be >= 1", file=sys.stderr)
        return 2
    # The config's Model RB families (its bulk) times --scale, no augmentation, blocks of --instances-per-block.
    # Measured on 2 CPUs with the native core at ~166k nodes/s (a block of 16 is ~1 s of work): 180 instances
    # in blocks of 16 gave 1.54x, 720 in blocks of 60 1.78x with the dashboard on, 1.92x without it.
    fams = [f for f in cfg.data.generate.families if f.family == "rb"] or cfg.data.generate.families[:1]
    data = cfg.data.model_copy(update={
        "generate": cfg.data.generate.model_copy(update={
            "families": [f.model_copy(update={"count": max(12, f.count) * args.scale}) for f in fams],
            "heldout": []}),
        "augment": cfg.data.augment.model_copy(update={"factor": 1}),
        "instances_per_block": args.instances_per_block})
    specs = steps.instance_specs(data, cfg.run.seed)
    # No dashboard: Ray Data needs no State API (Tune+Train do), and on 2 CPUs the dashboard's processes take
    # their share from the two workers (1.78x -> 1.92x in the measurement above).
    info = init_ray(cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_cpus": 2,
                                                                              "include_dashboard": False})}))
    out = {"benchmark": "data", "instances": len(specs), "instances_per_block": data.instances_per_block,
           "scale": args.scale, "dashboard": False,
           "families": [f"{f.family}:{','.join(f.sizes)}" for f in fams],
           "label": cfg.data.label.model_dump(), "cluster_cpus": info.num_cpus, "runs": {}}
    try:
        # warm-up: two blocks, so both worker processes exist and have imported everything (a cold second worker
        # started ~3 s late and was charged to the 2-worker run)
        list(ray_data.build(specs[:2 * data.instances_per_block], data, workers=2))
        for workers in (1, 2):
            t0 = time.perf_counter()
            rows = list(ray_data.build(specs, data, workers=workers))
            wall = time.perf_counter() - t0
            states = sum(len(json.loads(r["states_json"])) + r["dropped_states"] for r in rows)
            out["runs"][str(workers)] = {"wall_s": round(wall, 2), "instances_per_s": round(len(rows) / wall, 3),
                                         "labelled_states_per_s": round(states / wall, 3), "states": states}
    finally:
        if info.started:
            shutdown_ray()
    one, two = out["runs"]["1"], out["runs"]["2"]
    out["speedup_2_vs_1"] = round(two["instances_per_s"] / one["instances_per_s"], 3)
    out["machine_ceiling_no_ray"] = _ceiling(specs, data)
    out["share_of_ceiling"] = round(out["speedup_2_vs_1"] / out["machine_ceiling_no_ray"]["speedup"], 3)
    print(json.dumps(out, indent=1))
    return 0
