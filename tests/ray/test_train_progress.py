"""Training progress reaches the driver while `fit()` blocks: one record per finished epoch, relayed by the Train
controller (rank 0's report) into a file the driver tails, then to the console line ("train  teacher 2/3 epochs")."""
import json
import logging
import queue

import pytest

from ray_pipeline.cli import main
from ray_pipeline.console import PROGRESS
from ray_pipeline.paths import RunPaths
from ray_pipeline.train import progress as train_progress

from ..conftest import CONFIGS

pytestmark = [pytest.mark.ray]

TINY = [
    "data.generate.families=[{family: rb, sizes: [small], count: 5}, {family: ksat, sizes: [small], count: 3}]",
    "data.generate.heldout=[]", "data.augment.factor=2", "data.label.states_per_instance=4",
    "data.label.top_k=6", "data.label.node_budget=300", "train.teacher.hidden=16", "train.teacher.heads=2",
    "train.models=[teacher]",
]


def test_follow_delivers_every_complete_line_in_order_and_all_of_them_by_the_end(tmp_path):
    got: queue.Queue = queue.Queue()
    path = tmp_path / "logs" / "p.jsonl"
    with train_progress.follow(path, got.put, poll_s=0.05):
        with open(path, "a") as f:
            f.write('{"epoch": 1}\n{"epo')  # a line cut in the middle of a write is held back ...
            f.flush()
            assert got.get(timeout=30) == {"epoch": 1}
            f.write('ch": 2}\n')  # ... until it is complete
            f.flush()
            assert got.get(timeout=30) == {"epoch": 2}
            f.write('not json\n{"epoch": 3}\n')
    # the block returns only after the last lines are delivered (no wait needed here)
    assert got.get_nowait() == {"epoch": 3}
    assert got.empty()


def test_the_relay_appends_rank_zeros_epoch_and_never_raises(tmp_path):
    relay = train_progress.EpochRelay(str(tmp_path / "p.jsonl"))
    relay.after_report(None, [{"epoch": 1, "val_loss": 0.5}, {"epoch": 1}], None)
    relay.after_report(None, [{"val_loss": 0.5}], None)  # not an epoch report
    relay.after_report(None, [{"epoch": 2}], None)
    assert [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()] == [{"epoch": 1}, {"epoch": 2}]
    train_progress.EpochRelay(str(tmp_path / "missing" / "p.jsonl")).after_report(None, [{"epoch": 1}], None)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen = []

    def emit(self, record):
        if getattr(record, "progress", None):
            self.seen.append(record.progress)


def test_the_driver_sees_one_progress_record_per_epoch_of_a_real_training_run(tmp_path, ray_session):
    """Two DDP workers (quick.yaml) train the teacher for 3 epochs: the console's progress records are exactly
    0/3 (start), 1/3, 2/3, 3/3, and they match the epochs in the model's metrics."""
    root = tmp_path / "runs"
    assert main(["generate", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=p", *TINY]) == 0
    plog = logging.getLogger(PROGRESS)
    handler, level = _Records(), plog.level
    plog.addHandler(handler)
    plog.setLevel(logging.INFO)
    try:
        assert main(["train", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=p", *TINY,
                     "train.teacher.optim.epochs=3"]) == 0
    finally:
        plog.removeHandler(handler)
        plog.setLevel(level)
    paths = RunPaths.of(root, "p")
    hist = json.loads((paths.model("teacher") / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    epochs = [(done, total) for stage, done, total, unit, label in handler.seen
              if stage == "train" and unit == "epochs" and label == "teacher"]
    assert epochs == [(0, 3), (1, 3), (2, 3), (3, 3)]
    lines = paths.train_progress("teacher").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [h["epoch"] for h in hist]
