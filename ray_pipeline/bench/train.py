"""`ray-pipeline bench train [CONFIG]`: training samples/s of the teacher with 1 and 2 DDP workers, side by side.

Needs the config's dataset (runs `generate` first if it is missing). Each worker gets one CPU; samples/s is the
global rate (all workers), averaged over epochs after the first.
"""
from __future__ import annotations

import argparse
import json
import statistics

from ..config import load_config
from ..kinds import KINDS, deployed


def run(args: argparse.Namespace) -> int:
    from ..cli import main as cli_main
    from ..data import dataset as ds_lib
    from ..manifest import Manifest
    from ..paths import RunPaths
    from ..storage import Storage
    from ..runtime import init_ray, shutdown_ray
    from ..train import driver

    cfg = load_config(args.config, list(args.overrides))
    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    if cli_main(["generate", args.config, *args.overrides]) != 0:
        return 1
    cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_cpus": 2}),
                                 "train": cfg.train.model_copy(update={"cpus_per_worker": 1.0})})
    info = init_ray(cfg)
    kind = KINDS[deployed().compare_to]  # the teacher: the largest network, where DDP has work to share
    out = {"benchmark": "train", "model": kind.name, "runs": {}}
    try:
        manifest = ds_lib.read_manifest(paths.dataset)
        data_hash = Manifest.read(paths.manifest).output_hash("generate")
        section = driver.model_section(cfg, kind.name)
        section["optim"]["epochs"] = 4
        section["optim"]["early_stopping_patience"] = 100
        spec = driver.model_spec(cfg, kind.name, section, manifest["norm"][kind.norm_key], train_key="bench",
                                 dataset_hash=data_hash)
        storage = Storage.of(paths.run, cfg.run.storage, cfg.run.name)
        datasets = driver.training_datasets(cfg, paths, storage, kind.name, manifest)  # as the train stage reads
        for n in (1, 2):
            name = f"bench-{kind.name}-{n}w"
            driver.clear_checkpoints(storage, paths.run / "bench", name)
            loop_cfg = driver.loop_config(cfg, paths, kind.name, section, spec, paths.run / "bench" / name)
            result = driver.make_trainer(cfg, loop_cfg, datasets, storage, paths.run / "bench", name, num_workers=n).fit()
            hist = driver.history(result)
            rates = [h["samples_per_s"] for h in hist[1:]] or [h["samples_per_s"] for h in hist]
            out["runs"][f"{n}_workers"] = {"samples_per_s": round(statistics.mean(rates), 1),
                                           "epoch_time_s": round(statistics.mean(h["epoch_time_s"] for h in hist[1:]
                                                                                 or hist), 3),
                                           "train_states": manifest["counts"]["states"]["train"]}
    finally:
        if info.started:
            shutdown_ray()
    r1, r2 = out["runs"]["1_workers"]["samples_per_s"], out["runs"]["2_workers"]["samples_per_s"]
    out["speedup_2_vs_1"] = round(r2 / r1, 3) if r1 else None
    print(json.dumps(out, indent=1))
    return 0
