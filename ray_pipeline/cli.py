"""`ray-pipeline` command line. Thin: parse, load config, hand over to the pipeline or a tool."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from . import console
from .config import STAGES, ConfigError

log = logging.getLogger("ray_pipeline")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_STAGE_HELP = {
    "generate": "build the dataset: generate -> trace -> label -> augment -> purify -> split -> Parquet (Ray Data)",
    "train": "train teacher, student (distilled) and cost predictor with DDP (Ray Train); runs generate if needed",
    "tune": "ASHA sweep of the teacher's or student's hyperparameters (Ray Tune); writes the best config as YAML",
    "export": "ONNX export with parity check, INT8 quantization, pruning (Ray tasks); fills the registry",
    "evaluate": "ranking metrics, calibration, error analysis and the solver speedup benchmark (Ray tasks)",
    "report": "write reports/report.md with plots and metrics.json from what the run holds",
}


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/quick.yaml")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="config overrides, type-checked, e.g. run.name=try1 train.num_workers=1")
    p.add_argument("--address", default=None, help="join this Ray cluster (default: embedded local Ray, or RAY_ADDRESS)")
    p.add_argument("--force", action="store_true", help="recompute the stages even if their hashes match")
    p.add_argument("--verbose", action="store_true",
                   help="show the full output (Ray, workers, libraries) instead of one line per stage; "
                        "it always goes to <run>/logs/run.log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-pipeline",
        description="Learn variable-ordering heuristics for a backtracking constraint solver on Ray.",
        epilog="Examples:\n  ray-pipeline run configs/quick.yaml\n  ray-pipeline run configs/quick.yaml run.name=try1 "
               "--force\n  ray-pipeline solve uf50-01.cnf --heuristic dom-wdeg --json\n  ray-pipeline bench solver",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline (the stages listed in the config's `stages`)")
    _add_pipeline_args(p)
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    for stage in STAGES:
        sp = sub.add_parser(stage, help=_STAGE_HELP[stage], description=_STAGE_HELP[stage])
        _add_pipeline_args(sp)
        if stage == "tune":
            sp.add_argument("--write-back", action="store_true",
                            help="after the sweep, set the swept keys (train.<model>.<key>) in CONFIG itself to the "
                                 "best trial's values; comments and layout are kept")
        if stage == "evaluate":
            sp.add_argument("--files", nargs="+", default=[], metavar="FILE",
                            help="DIMACS files to benchmark too (.cnf, or .col:K with K colours)")

    p = sub.add_parser("solve", help="solve one instance file (DIMACS .cnf/.col or project JSON)")
    from .solver.command import add_arguments as add_solve_arguments
    add_solve_arguments(p)

    p = sub.add_parser("ui", help="local web app: Control Center (runs, models) and Model Explorer (live solves)")
    from .ui import add_arguments as add_ui_arguments
    add_ui_arguments(p)

    p = sub.add_parser("drift", help="are these instances like the model's training data? (KS per feature; exit 1 if not)")
    from .drift import add_arguments as add_drift_arguments
    add_drift_arguments(p)

    p = sub.add_parser("bench", help="benchmarks printing JSON figures measured side by side in one run")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    from .bench import add_subcommands as add_bench_subcommands
    add_bench_subcommands(bsub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes the positional overrides only before the first flag; `run CONFIG --stages train a.b=1` is as
    # natural to type, so key=value words after a flag are overrides too. Anything else is still an error.
    if extra and hasattr(args, "overrides") and all("=" in w and not w.startswith("-") for w in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .runtime import configure_logging
    configure_logging(args.log_level)
    try:
        if args.command in ("run", *STAGES):
            return _pipeline(args)
        if args.command == "solve":
            from .solver.command import run as run_solve
            return run_solve(args)
        if args.command == "bench":
            # SIGTERM unwinds like Ctrl-C, so a benchmark's worker pool is terminated with it (bench/pool.py)
            if threading.current_thread() is not threading.main_thread():  # signal.signal works there only
                return args.bench_fn(args)
            before = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            try:
                return args.bench_fn(args)
            finally:
                signal.signal(signal.SIGTERM, before)
        if args.command == "ui":
            from .ui.app import run as run_ui
            return run_ui(args)
        if args.command == "drift":
            from .drift import run as run_drift
            return run_drift(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _pipeline(args: argparse.Namespace) -> int:
    from .config import load_config
    from .manifest import Manifest, ManifestError
    from .paths import RunPaths
    from .pipeline import with_upstream
    from .preflight import PreflightError, check_before_ray

    cfg = load_config(args.config, args.overrides)
    # --files is part of the config, so the stage hash sees them; relative paths are anchored here, at the start
    from .evaluate.stage import anchor_files

    files = anchor_files(list(cfg.evaluate.files) + list(getattr(args, "files", None) or []), Path.cwd())
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"files": files})})
    if args.command == "run":
        targets = cfg.stages
        if args.stages:
            targets = [s.strip() for s in args.stages.split(",") if s.strip()]
            bad = [s for s in targets if s not in STAGES]
            if bad:
                raise ConfigError("--stages", [f"--stages: unknown stage(s) {bad}; choose from {list(STAGES)}"])
        if cfg.tune.enabled and "tune" not in targets and not args.stages:
            targets = [s for s in STAGES if s in targets or s == "tune"]
    else:
        targets = [args.command]
    stages = with_upstream(targets)
    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    try:
        check_before_ray(cfg, stages)
        manifest = Manifest.open(paths.manifest, cfg)
    except (PreflightError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    with console.session(paths.log, verbose=args.verbose) as con:
        code, outcome = _run_pipeline(args, cfg, paths, manifest, stages, con)
        if code != EXIT_OK:
            return code
        _summary(con, paths, outcome)
        if getattr(args, "write_back", False):
            _write_back(con, args.config, paths)
    return EXIT_OK


def _write_back(con, config_path: str, paths) -> None:
    """The sweep's best values into the config file (tune.writeback); a ConfigError leaves the file untouched."""
    import datetime
    import json

    from .tune.writeback import write_back

    s = json.loads((paths.tune / "summary.json").read_text())
    ok = sum(1 for t in s["trials"] if t.get(s["metric"]) is not None)
    summary_md = paths.tune / "summary.md"
    if summary_md.is_relative_to(Path.cwd()):  # a config file in a repository names the run as a user types it
        summary_md = summary_md.relative_to(Path.cwd())
    note = (f"best of {ok} trials by {s['metric']} = {s['best_value']:.4g} "
            f"(ray-pipeline tune --write-back, {datetime.date.today()}, {summary_md})")
    for key, (old, new) in write_back(config_path, s["model"], s["best_params"], note).items():
        con.print(f"{config_path}: {key}: {old} -> {new}")


def _run_pipeline(args, cfg, paths, manifest, stages, con) -> tuple[int, dict[str, str]]:
    from .pipeline import StageContext, StageFailed, run_stages
    from .preflight import PreflightError, check_cluster
    from .runtime import init_ray, set_tracking_env, shutdown_ray, wandb_mode

    try:
        set_tracking_env(cfg, wandb_dir=str(paths.run))
        if set(stages) & {"train", "tune", "export", "evaluate"}:
            # torch before Ray and pyarrow: loaded late, inside a Ray Job driver, libtorch_cpu.so failed to load
            # ("Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so") and the job died after `generate`
            import torch  # noqa: F401
        info = init_ray(cfg, address=args.address, extra_env={"WANDB_MODE": wandb_mode(cfg)})
        try:
            check_cluster(cfg, stages, info)
            ctx = StageContext(cfg=cfg, paths=paths, manifest=manifest, force=args.force)
            return EXIT_OK, run_stages(ctx, stages)
        finally:
            if info.started:
                shutdown_ray()
    except PreflightError as e:
        con.error(f"error: {e}")
        return EXIT_USAGE, {}
    except StageFailed as e:
        con.error(f"error: {e}")
        con.error(f"log: {paths.log}")
        return EXIT_FAILED, {}


def _summary(con, paths, outcome: dict[str, str]) -> None:
    """Stage times, the headline ratios with their intervals, and where the report, log and run are."""
    import json

    con.print("stages: " + ", ".join(f"{k} {v}" for k, v in outcome.items()))
    try:
        m = json.loads(paths.manifest.read_text())
        times = [f"{k} {m['stages'][k]['seconds']:.0f} s" for k in outcome if m["stages"].get(k, {}).get("seconds")]
        if times:
            con.print("stage times: " + ", ".join(times))
        ev = json.loads((paths.evaluation / "evaluation.json").read_text())
        sp = ev["speedup"]
        for split, s in sp["summary"].items():
            for h in ("learned", "expert"):  # the expert: its ceiling, on its own (fewer) instances
                r = s.get(h) or {}
                if r.get("geomean_node_ratio") is None:
                    continue
                con.print(f"{h} vs {sp['baseline']} on {split} ({r['compared']} instances): "
                          f"nodes x{r['geomean_node_ratio']:.3f} {_ci(r.get('geomean_node_ratio_ci95'))}, "
                          f"time x{r['geomean_time_ratio']:.3f} {_ci(r.get('geomean_time_ratio_ci95'))}")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a run without an evaluation (e.g. `generate` alone) has no ratios to show
    report = paths.reports / "report.md"
    if report.exists():
        con.print(f"report: {report}")
    con.print(f"log: {paths.log}")
    con.print(f"run directory: {paths.run}")


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[no interval]"


if __name__ == "__main__":
    sys.exit(main())
