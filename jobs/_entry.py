"""Shared argument handling for the job entrypoints (each job file is a few lines on top of this).

Inside a Ray Job, RAY_ADDRESS is set by the job supervisor, so `ray_pipeline.runtime.init_ray` joins the
cluster the job was submitted to instead of starting an embedded Ray.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse(stage: str, argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog=f"python -m jobs.{stage}",
                                description=f"Ray Job entrypoint for `ray-pipeline {stage}`.")
    p.add_argument("--config", required=True, help="YAML config, relative to the job's working dir")
    p.add_argument("--force", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key.path=value")
    a = p.parse_args(argv)
    cli_args = [stage, a.config, *a.overrides]
    if a.force:
        cli_args.append("--force")
    return cli_args


def run(stage: str, argv: list[str] | None = None) -> int:
    from ray_pipeline.cli import main

    args = parse(stage, argv)
    where = os.environ.get("RAY_ADDRESS") or "an embedded local Ray"
    print(f"[jobs.{stage}] ray-pipeline {' '.join(args)} on {where}", flush=True)
    return main(args)


if __name__ == "__main__":
    sys.exit("use python -m jobs.<stage>")
