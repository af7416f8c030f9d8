"""Fixtures of the fault suite: one small dataset, built once, that each test copies into its own run."""
import json
import shutil

import pytest

from ray_pipeline.cli import main
from ray_pipeline.paths import RunPaths

from ..conftest import CONFIGS

TINY = [
    "data.generate.families=[{family: rb, sizes: [small], count: 5}, {family: ksat, sizes: [small], count: 3}]",
    "data.generate.heldout=[]", "data.augment.factor=2", "data.label.states_per_instance=4",
    "data.label.top_k=6", "data.label.node_budget=300", "train.teacher.hidden=16", "train.teacher.heads=2",
    "train.teacher.optim.epochs=4",
    # the faults exercised here live in the shared training loop; one model is enough to show each of them
    "train.models=[teacher]",
]


@pytest.fixture(scope="session")
def root(tmp_path_factory, ray_session):
    r = tmp_path_factory.mktemp("runs")
    assert main(["generate", str(CONFIGS / "quick.yaml"), f"run.root={r}", "run.name=base", *TINY]) == 0
    return r


def _copy_dataset(root, name):
    """A run that starts from the base run's finished dataset (same bytes, same manifest entry)."""
    src, dst = RunPaths.of(root, "base"), RunPaths.of(root, name)
    shutil.copytree(src.run / "datasets", dst.run / "datasets")
    m = json.loads(src.manifest.read_text())
    m["stages"] = {"generate": m["stages"]["generate"]}
    m["config"]["run"]["name"] = name
    dst.manifest.write_text(json.dumps(m))
    return dst


