"""A benchmark stopped from outside (SIGTERM: a CI timeout, `kill`, a job scheduler) takes its worker processes with
it. Real command, real spawned workers solving Model RB n=50 without a node limit (seconds to minutes each, so they
are busy when the signal comes): before, the parent died and its workers ran on until their instance was done."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_pipeline.models import io as model_io
from ray_pipeline.models.nets import StudentScorer
from ray_pipeline.solver.schema import INPUT_FEATURES

from ..conftest import CONFIGS

PROC = Path("/proc")
pytestmark = pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="reads the process table in /proc")


def _stat(pid: int) -> list[str]:
    text = (PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm) ": state, ppid, ...


def _workers(parent: int) -> dict[int, float]:
    """The parent's pool workers (spawned children, not the resource tracker) -> their user CPU seconds."""
    out = {}
    for p in PROC.iterdir():
        if not p.name.isdigit():
            continue
        try:
            st = _stat(int(p.name))
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(st[1]) == parent and "spawn_main" in cmd and "resource_tracker" not in cmd:
            out[int(p.name)] = int(st[11]) / os.sysconf("SC_CLK_TCK")
    return out


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_bench_and_its_workers(tmp_path):
    f = len(INPUT_FEATURES)
    torch.manual_seed(0)
    mean, std = np.zeros(f).tolist(), np.ones(f).tolist()
    spec = model_io.make_spec("student", {"hidden": 8, "layers": 1, "dropout": 0.0}, {"mean": mean, "std": std},
                              train_key="test", dataset_hash="test", seed=0)
    model_io.save(StudentScorer(f, 8, 1, 0.0, mean, std).eval(), spec, tmp_path)
    err = tmp_path / "stderr.txt"
    # limits far above any instance's: the workers are still solving when the signal comes, however fast the machine
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ray_pipeline.cli import main; sys.exit(main())", "bench", "heldout",
         str(CONFIGS / "quick.yaml"), "--model", str(tmp_path / "model.pt"), "--size", "xxlarge", "--count", "8",
         "--workers", "2", "--repeats", "1", "--node-limit", "100000000", "--time-limit", "600"],
        stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    workers: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # both workers up and solving
            workers = _workers(proc.pid)
            if len(workers) == 2 and min(workers.values()) > 1.0:
                break
            assert proc.poll() is None, err.read_text()[-2000:]
            time.sleep(0.2)
        assert len(workers) == 2 and min(workers.values()) > 1.0, "the bench never had two busy workers"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), f"workers still running after the bench exited: {list(workers)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
