"""Shared fixtures. Ray starts once per test session (starting it costs seconds; churn breaks CI)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports ray / wandb: hermetic, quiet, no network.
os.environ["RAY_PIPELINE_WANDB_MODE"] = "disabled"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks" / "public"
CONFIGS = REPO / "configs"

# The smoke run: the whole pipeline on a tiny config. Built once per session (smoke_run) and shared by the
# smoke tests and the web app's tests, so a full `make test` pays for one pipeline run.
SMOKE_OVERRIDES = [
    "data.generate.families=[{family: rb, sizes: [small], count: 6}, {family: ksat, sizes: [small], count: 3},"
    " {family: coloring, sizes: [small], count: 3}]",
    "data.generate.heldout=[{family: rb, sizes: [medium], count: 2}]",
    "data.augment.factor=2", "data.label.states_per_instance=4", "data.label.top_k=6", "data.label.node_budget=300",
    "train.teacher.optim.epochs=3", "train.student.optim.epochs=3", "train.cost.optim.epochs=3",
    "train.teacher.hidden=32", "train.student.hidden=8", "evaluate.max_instances=3", "evaluate.node_limit=5000",
    f"evaluate.files=[{BENCHMARKS}/sat/uf20-01.cnf, {BENCHMARKS}/col/myciel6.col:7]",
    "export.latency_calls=100", "export.parity_rows=64", "export.calibration_rows=32",
    "evaluate.heuristics=[lex, mrv, dom-deg, dom-wdeg, learned, expert]",  # quick.yaml leaves lex out; keep it covered
    "evaluate.expert.max_instances=2", "evaluate.expert.node_budget=300",
]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session, with the dashboard (Tune+Train need the State API)."""
    import ray

    from ray_pipeline.config import load_config
    from ray_pipeline.runtime import init_ray

    cfg = load_config(CONFIGS / "quick.yaml", ["ray.num_cpus=2", "tracking.wandb_mode=disabled"])
    info = init_ray(cfg)
    yield info
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, ray_session):
    """RunPaths of one finished pipeline run (quick.yaml + SMOKE_OVERRIDES) under its own run root."""
    from ray_pipeline.cli import main
    from ray_pipeline.paths import RunPaths

    root = tmp_path_factory.mktemp("runs")
    assert main(["run", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=smoke", *SMOKE_OVERRIDES]) == 0
    return RunPaths.of(root, "smoke")


@pytest.fixture
def tmp_runs(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d
