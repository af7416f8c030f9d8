"""`ray-pipeline bench calibration [CONFIG]`: the deployed scorer's ECE, at the temperature the run's evaluate
stage fitted on validation, on `--copies` x the training mix of fresh instances (evaluate/fresh.py), labelled in
spawned local processes. Prints JSON beside the run's own test ECE; with the same copies as the config's
evaluate.fresh_calibration it reproduces the evaluate stage's `calibration.fresh` figures."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import load_config
from .pool import spawn_map


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="configs/quick.yaml")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    p.add_argument("--copies", type=int, default=4, help="fresh instances per family/size: the config's count x this")
    p.add_argument("--workers", type=int, default=2, help="processes")


def run(args: argparse.Namespace) -> int:
    from ..data import dataset as ds_lib
    from ..evaluate import fresh
    from ..kinds import deployed
    from ..models import io as model_io
    from ..paths import RunPaths

    cfg = load_config(args.config, list(args.overrides))
    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    evaluation = paths.evaluation / "evaluation.json"
    try:
        for flag, v in (("--copies", args.copies), ("--workers", args.workers)):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if not evaluation.is_file():
            raise ValueError(f"{evaluation}: no such file; the temperature comes from the run's evaluate stage "
                             f"(ray-pipeline run {args.config} --stages evaluate)")
        cal = json.loads(evaluation.read_text())["calibration"]
        t = float(cal["after"]["temperature"])
        kind = deployed().name
        model, spec = model_io.load(paths.model(kind))  # ModelError is a ValueError and names the file
        manifest = ds_lib.read_manifest(paths.dataset)
        k_max = manifest["top_k"]
        # the mix comes from this config, T from the run: they must be the run's own
        if manifest.get("config_hash") != cfg.section_hash("data") or \
                cal.get("families") != (list(cfg.train.families) if cfg.train.families else "all"):
            raise ValueError(f"{args.config} (with the overrides given) differs from the config run "
                             f"{cfg.run.name!r} was built with (data section, run.seed or train.families): pass "
                             f"that config")
        specs = fresh.fresh_specs(cfg, args.copies)
        if not specs:
            raise ValueError("data.generate.families holds none of train.families")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = [(chunk, cfg.data) for chunk in fresh.chunked(specs, args.workers * 8)]
    states = fresh.in_order(spawn_map(fresh.label_fresh_job, jobs, args.workers))
    if not states:
        print("error: no informative state on the fresh instances", file=sys.stderr)
        return 2
    result = {"benchmark": "calibration", "model": str(paths.model(kind)), "scores": spec.get("scores"),
              "temperature": t, "copies": args.copies, "instances_built": len(specs), "seed": cfg.run.seed,
              "fresh": fresh.summarize(model, states, k_max, t, cfg.evaluate.ece_bins, spec.get("scores") == "binary"),
              "run_test": {"states": cal.get("test_states"), "instances": cal.get("test_instances"),
                           "ece": cal["after"]["ece"], "ece_ci95": cal["after"].get("ece_ci95")}}
    print(json.dumps(result, indent=1))
    return 0
