"""`ray-pipeline bench ...`: benchmarks that print JSON figures measured side by side in one run."""
from __future__ import annotations

import argparse


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    from . import solver as solver_bench

    p = sub.add_parser("solver", help="nodes/s and nodes per heuristic on generated families; vs python-constraint")
    solver_bench.add_arguments(p)
    p.set_defaults(bench_fn=solver_bench.run)
    from . import learned as learned_bench

    p = sub.add_parser("learned", help="node and time ratios vs dom/wdeg of evaluate.learned top_k x max_depth x "
                                       "min_margin settings on a tuning set (not the held-out split)")
    learned_bench.add_arguments(p)
    p.set_defaults(bench_fn=learned_bench.run)
    p = sub.add_parser("heldout", help="evaluate.learned vs dom/wdeg and dom/deg on --count held-out instances "
                                       "(the run's own first, then more of the same kind): the claim at scale")
    learned_bench.add_heldout_arguments(p)
    p.set_defaults(bench_fn=learned_bench.run_heldout)
    from . import labels as labels_bench

    p = sub.add_parser("labels", help="how much of a probe label is signal: each state probed again on copies of "
                                      "its instance with the constraints in other orders (same features)")
    labels_bench.add_arguments(p)
    p.set_defaults(bench_fn=labels_bench.run)
    from . import calibration as calibration_bench

    p = sub.add_parser("calibration", help="the deployed scorer's ECE at the run's temperature on fresh instances "
                                           "of its training mix (--copies x the config's counts): a test split of "
                                           "~35 instances cannot settle ECE <= 0.05")
    calibration_bench.add_arguments(p)
    p.set_defaults(bench_fn=calibration_bench.run)
    for name, help_ in (("data", "dataset stage: instances/s and labelled states/s with 1 vs 2 workers"),
                        ("train", "training samples/s with 1 vs 2 DDP workers"),
                        ("model", "student latency/throughput: PyTorch vs ONNX Runtime FP32 vs INT8")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", nargs="?", default="configs/quick.yaml")
        p.add_argument("overrides", nargs="*", metavar="key.path=value")
        p.set_defaults(bench_fn=_lazy(name))
        if name == "data":
            p.add_argument("--scale", type=int, default=6, help="the config's Model RB counts times this (1,080 "
                           "instances for quick.yaml): a real run has thousands; a short one measures start-up")
            p.add_argument("--instances-per-block", type=int, default=30,
                           help="instances per block, one worker-actor call each (default.yaml: 16 over 11k instances)")
            p.add_argument("--rounds", type=int, default=3,
                           help="1- and 2-worker runs alternated this many times (1,2 then 2,1 ...); medians")


def _lazy(name: str):
    """Import the benchmark's module only when it runs (torch, Ray)."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"{__name__}.{name}").run(args)

    return run
