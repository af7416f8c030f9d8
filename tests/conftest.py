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


@pytest.fixture
def tmp_runs(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d
