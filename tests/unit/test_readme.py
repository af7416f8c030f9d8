"""Every shell command the README shows is one that works: subcommands and flags parse with the CLI's own
argparse, configs and overrides validate, repository files exist, and run-directory paths are where the
pipeline's own writers (TensorBoard, W&B offline) put things."""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from ray_pipeline.cli import build_parser
from ray_pipeline.config import load_config
from ray_pipeline.paths import RunPaths

from ..conftest import REPO

README = REPO / "README.md"
RUN_NAME = "quick"  # the README's run paths are those of `make demo` (configs/quick.yaml)


def _blocks() -> list[tuple[str, list[tuple[int, str]]]]:
    """(language, [(line number, logical line)]) of each fenced block; continuation lines joined."""
    out, lang, lines, pending = [], None, [], ""
    for no, text in enumerate(README.read_text().splitlines(), 1):
        if text.startswith("```"):
            if lang is None:
                lang, lines = text[3:].strip(), []
            else:
                out.append((lang, lines))
                lang = None
            continue
        if lang is None:
            continue
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        lines.append((no, pending + text))
        pending = ""
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


COMMANDS = [(no, shlex.split(line, comments=True)) for lang, lines in _blocks() if lang == "bash"
            for no, line in lines]
COMMANDS = [(no, argv) for no, argv in COMMANDS if argv]
SYNOPSIS = [(no, line) for lang, lines in _blocks() if lang == "" for no, line in lines
            if line.startswith("ray-pipeline ")]


def test_the_readme_has_the_commands_this_test_checks():
    assert len(SYNOPSIS) >= 6 and len(COMMANDS) >= 10


@pytest.mark.parametrize("no,line", SYNOPSIS, ids=[f"line{no}" for no, _ in SYNOPSIS])
def test_synopsis_names_real_subcommands_and_flags(no, line):
    parser = build_parser()
    words = line.split()
    subs = _subparsers(parser)
    for name in words[1].split("|"):
        assert name in subs, f"README:{no}: no subcommand {name!r}"
        p = subs[name]
        if name == "bench":
            p = _subparsers(p)[words[2].split("|")[0]] if words[2] in _subparsers(p) else None
            for bench in words[2].split("|"):
                assert bench in _subparsers(subs["bench"]), f"README:{no}: no bench {bench!r}"
            if p is None:
                continue
        flags = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line)
        for flag in flags:
            assert flag in p._option_string_actions, f"README:{no}: `{name}` has no flag {flag}"


def _check_cli(no: int, argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"README:{no}: `ray-pipeline {' '.join(argv)}` does not parse")
    if getattr(args, "config", None) and getattr(args, "overrides", None) is not None:
        assert (REPO / args.config).is_file(), f"README:{no}: no config {args.config}"
        load_config(REPO / args.config, [os.path.expandvars(o) for o in args.overrides])


def _check_job(no: int, argv: list[str]) -> None:
    from jobs import _entry

    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs."), argv
    stage = argv[2].split(".", 1)[1]
    assert (REPO / "jobs" / f"{stage}.py").is_file(), f"README:{no}: no job module {argv[2]}"
    cli = _entry.parse("run" if stage == "pipeline" else stage, argv[3:])
    os.environ.setdefault("PWD", str(REPO))
    _check_cli(no, cli)


def _run_paths(tmp_path) -> RunPaths:
    """A run directory as the pipeline's tracking writers leave it (real TensorBoard and W&B offline)."""
    from ray_pipeline.train import tracking

    paths = RunPaths.of(tmp_path / "runs", RUN_NAME)
    tracking.write_tensorboard(paths.tensorboard / "teacher", [{"epoch": 1, "train_loss": 1.0}])
    code = textwrap.dedent(f"""
        import os
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
        from pathlib import Path
        from ray_pipeline.config import load_config
        from ray_pipeline.paths import RunPaths
        from ray_pipeline.train import driver, loop
        cfg = load_config("configs/quick.yaml", ["run.root={paths.run.parent}"])
        paths = RunPaths.of(cfg.run.root, cfg.run.name)
        c = driver.loop_config(cfg, paths, "teacher", driver.model_section(cfg, "teacher"), {{"hparams": {{}}}},
                               Path("{paths.run}") / "marker")
        run = loop._wandb_init(c, 0)  # what rank 0 of a Train worker does
        assert run is not None
        run.finish()
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return paths


def test_every_bash_command_in_the_readme_is_valid(tmp_path):
    run_root = None
    makefile = (REPO / "Makefile").read_text()
    for no, argv in COMMANDS:
        if argv[0] in ("export",):
            continue
        if argv[:3] == ["ray", "job", "submit"]:
            sep = argv.index("--")
            opts = {argv[i]: argv[i + 1] for i in range(3, sep) if argv[i].startswith("--")}
            assert (REPO / opts["--runtime-env"]).is_file(), f"README:{no}: {opts['--runtime-env']}"
            assert opts["--working-dir"] == "."
            argv = argv[sep + 1:]
        if argv[0] in ("ray-pipeline", ".venv/bin/ray-pipeline"):
            _check_cli(no, argv[1:])
        elif argv[:2] == ["python", "-m"]:
            _check_job(no, argv)
        elif argv[0] == "make":
            assert re.search(rf"^{re.escape(argv[1])}:", makefile, re.M), f"README:{no}: no make target {argv[1]}"
        elif argv[0].startswith("cluster/"):
            assert os.access(REPO / argv[0], os.X_OK), f"README:{no}: {argv[0]} is not an executable file"
        elif argv[0] in ("tensorboard", "wandb"):
            run_root = run_root or _run_paths(tmp_path)
            path = argv[-1]
            assert path.startswith(f"runs/{RUN_NAME}/"), f"README:{no}: {path}"
            assert glob.glob(str(tmp_path / path)), f"README:{no}: nothing at {path} after the writers ran"
        else:
            pytest.fail(f"README:{no}: this test does not know how to check `{' '.join(argv)}`")
        for tok in argv:  # any repository file a command names
            if re.match(r"(configs|cluster|benchmarks|jobs|docs)/", tok):
                assert (REPO / tok).exists(), f"README:{no}: no file {tok}"
