"""`ray-pipeline bench data [CONFIG]`: dataset throughput with 1 and 2 Ray Data workers, side by side.

The same instance specs go through the same Ray Data pipeline (generate -> trace -> label -> drop) twice on one
embedded Ray, once capped at 1 concurrent task and once at 2; instances/s, labelled states/s and the ratio.
"""
from __future__ import annotations

import argparse
import json
import time

from ..config import load_config


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    from ..data import ray_data, steps
    from ..runtime import init_ray, shutdown_ray

    # Model RB at the sizes and count of the config (at least 12 per size: with fewer, one slow instance at the
    # end decides the wall time), one instance per block so both workers stay busy to the end.
    fam = next((f for f in cfg.data.generate.families if f.family == "rb"), cfg.data.generate.families[0])
    data = cfg.data.model_copy(update={
        "generate": cfg.data.generate.model_copy(update={
            "families": [fam.model_copy(update={"count": max(12, fam.count)})],
            "heldout": []}),
        "augment": cfg.data.augment.model_copy(update={"factor": 1}), "instances_per_block": 1})
    specs = steps.instance_specs(data, cfg.run.seed)
    info = init_ray(cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_cpus": 2})}))
    out = {"benchmark": "data", "instances": len(specs), "family": fam.family, "sizes": fam.sizes,
           "label": cfg.data.label.model_dump(), "cluster_cpus": info.num_cpus, "runs": {}}
    try:
        list(ray_data.build(specs[:2], data, workers=2))  # warm-up: worker processes, imports
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
    print(json.dumps(out, indent=1))
    return 0
