"""Training under faults: the driver killed mid-run, a worker killed mid-epoch, NaN losses."""
import json
import os
import signal
import subprocess
import sys

import pytest

from ray_pipeline.cli import main
from ray_pipeline.paths import RunPaths

from ..conftest import CONFIGS, REPO
from .conftest import TINY, _copy_dataset, wait_for, wait_until_driver_reaped

pytestmark = [pytest.mark.ray, pytest.mark.faults, pytest.mark.slow]

def _cli(root, name, *extra, address=None, timeout=900):
    cmd = [sys.executable, "-m", "ray_pipeline.cli", "train", str(CONFIGS / "quick.yaml"), f"run.root={root}",
           f"run.name={name}", *TINY, *extra] + (["--address", address] if address else [])
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_killing_the_driver_midway_then_rerunning_continues_from_the_checkpoint(root, ray_session):
    paths = _copy_dataset(root, "killed")
    extra = ("debug.sleep_per_epoch_s=4",)
    p = _cli(root, "killed", *extra, address=ray_session.address)

    def recorded_checkpoint():
        assert p.poll() is None, "the driver ended before its first checkpoint"
        # a checkpoint counts once the controller has recorded it (its snapshot file), not when its folder appears
        return list(paths.checkpoints.glob("teacher-*/checkpoint_manager_snapshot.json"))

    wait_for("the first recorded teacher checkpoint", recorded_checkpoint, timeout=600, poll=0.5)
    os.killpg(p.pid, signal.SIGKILL)  # the whole driver process group, mid-training
    p.wait(timeout=30)
    assert not (paths.model("teacher") / "model.pt").exists()
    # the rerun must not compete with the dead job's Train workers for the 2 CPUs
    wait_until_driver_reaped(p.pid, ray_session.dashboard_url)
    q = _cli(root, "killed", *extra, address=ray_session.address)
    out, _ = q.communicate(timeout=900)
    assert q.returncode == 0, out[-3000:]
    # the worker's message reaches the driver's log file (the console shows one line per stage)
    assert "[teacher] resumed from checkpoint after epoch" in paths.log.read_text()
    hist = json.loads((paths.model("teacher") / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]  # one curve, continued, not restarted


def test_a_worker_killed_mid_training_restarts_from_the_checkpoint(root):
    paths = _copy_dataset(root, "crash")
    assert main(["train", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=crash", *TINY,
                 "debug.crash_worker_at_epoch=2"]) == 0
    assert list(paths.checkpoints.glob("teacher-*/.crashed-teacher-2"))  # the worker really died
    hist = json.loads((paths.model("teacher") / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    base = _copy_dataset(root, "calm")
    assert main(["train", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=calm", *TINY]) == 0
    calm = json.loads((base.model("teacher") / "metrics.json").read_text())["history"]
    # same data, same seed: the interrupted run ends close to the undisturbed one
    assert abs(hist[-1]["val_top1"] - calm[-1]["val_top1"]) < 0.15
    assert abs(hist[-1]["val_loss"] - calm[-1]["val_loss"]) < 0.25


def test_nan_loss_is_recovered_and_gives_up_with_a_clear_error(root, capsys):
    _copy_dataset(root, "nan")
    assert main(["train", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=nan", *TINY,
                 "debug.nan_loss_at_step=0"]) == 0
    hist = json.loads((RunPaths.of(root, "nan").model("teacher") / "metrics.json").read_text())["history"]
    # epoch 1 runs at lr 0.003 x warm-up 1/2; the recovery halves it once more (train.nan_lr_factor)
    assert len(hist) == 4 and hist[0]["lr"] == pytest.approx(0.003 * 0.5 * 0.5)
    _copy_dataset(root, "nan2")
    code = main(["train", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=nan2", *TINY,
                 "debug.nan_loss_at_step=0", "train.nan_retries=0", "train.max_failures=0"])
    err = capsys.readouterr().err
    assert code == 1 and "NaN/Inf" in err and "train.nan_retries" in err
    assert not (RunPaths.of(root, "nan2").model("teacher") / "model.pt").exists()
