"""A small ASHA sweep on 2 CPUs: trials finish (no deadlock), results are viewable, the best config loads."""
import json

import pytest

from ray_pipeline.cli import main
from ray_pipeline.config import load_config
from ray_pipeline.paths import RunPaths

from ..conftest import CONFIGS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_asha_sweep_on_two_cpus_writes_summary_tensorboard_and_best_yaml(tmp_path, ray_session):
    args = ["tune", str(CONFIGS / "tune.yaml"), f"run.root={tmp_path}",
            "data.generate.families=[{family: rb, sizes: [small], count: 6}, {family: ksat, sizes: [small], count: 3}]",
            "data.label.states_per_instance=4", "data.label.node_budget=300", "tune.num_samples=3", "tune.max_t=2",
            "train.teacher.heads=2"]
    assert main(args) == 0
    paths = RunPaths.of(tmp_path, "tune")
    s = json.loads((paths.tune / "summary.json").read_text())
    assert len(s["trials"]) == 3 and all(t["val_top1"] is not None for t in s["trials"])
    assert all(1 <= t["iterations"] <= 2 for t in s["trials"])
    assert list((paths.tune / "sweep").rglob("events.out.tfevents.*")), "no TensorBoard files for the trials"
    assert (paths.tune / "sweep.png").stat().st_size > 0 and "| trial |" in (paths.tune / "summary.md").read_text()
    best = load_config(paths.tune / "best.yaml")  # a complete, valid config for `ray-pipeline train`
    assert best.train.teacher.optim.lr == pytest.approx(s["best_params"]["optim.lr"])
    assert best.train.teacher.hidden == s["best_params"]["hidden"] and not best.tune.enabled
    assert "train" in best.stages
