"""A small ASHA sweep on 2 CPUs: trials finish (no deadlock), results are viewable, the best config loads."""
import json

import pytest

from ray_pipeline.cli import main
from ray_pipeline.config import load_config
from ray_pipeline.paths import RunPaths

from ..conftest import CONFIGS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_asha_sweep_on_two_cpus_writes_summary_tensorboard_and_best_yaml(tmp_path, ray_session):
    config = tmp_path / "tune.yaml"  # --write-back edits the config file itself: a copy
    config.write_text((CONFIGS / "tune.yaml").read_text())
    args = ["tune", str(config), f"run.root={tmp_path}",
            "data.generate.families=[{family: rb, sizes: [small], count: 6}, {family: ksat, sizes: [small], count: 3}]",
            "data.label.states_per_instance=4", "data.label.node_budget=300", "tune.num_samples=3", "tune.max_t=2",
            "train.teacher.heads=2", "--write-back"]
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
    # --write-back: the swept keys now hold the best values in the config file, the rest of it as it was
    written = load_config(config)
    assert written.train.teacher.hidden == s["best_params"]["hidden"]
    assert written.train.teacher.optim.lr == pytest.approx(s["best_params"]["optim.lr"], rel=1e-3)
    assert written.train.teacher.dropout == pytest.approx(s["best_params"]["dropout"], rel=1e-3, abs=1e-4)
    text = config.read_text()
    assert "# train.teacher swept: best of 3" in text
    # the written-back values are ones each trial sets itself: the same command again finds the sweep up to date
    finished = json.loads(paths.manifest.read_text())["stages"]["tune"]["finished"]
    assert main(args) == 0
    assert json.loads(paths.manifest.read_text())["stages"]["tune"]["finished"] == finished
    assert config.read_text().count("# train.teacher swept:") == 1 and load_config(config) == written
