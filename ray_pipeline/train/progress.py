"""Epoch progress of a Ray Train run, live on the driver's console while `TorchTrainer.fit()` blocks.

The channel: every epoch, the workers' `ray.train.report(metrics)` reaches the Train controller; `EpochRelay` (a
Ray Train `UserCallback`, run in the controller) appends rank 0's epoch as one JSON line to a file under the run
directory; `follow` (a daemon thread in the driver) tails that file and hands each record on (to
`console.progress`). Ray Train V2 pins the controller to the driver's node (`label_selector` on the node id, Ray
2.60 `DataParallelTrainer._initialize_and_run_controller`), so the file is on the driver's disk even when the
workers run on nodes that cannot see it -- and no worker touches the run directory. The path is absolute: Ray
changes the working directory of its processes.

Best effort by design: a progress line that cannot be written is dropped, never a reason for training to fail.
Ray Train's local mode (`train.num_workers=0`) runs no callbacks, so it reports no epochs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import ray.train

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the driver looks at the file (a console refresh, not a test wait)


class EpochRelay(ray.train.UserCallback):
    """Appends `{"epoch": n, ...}` of rank 0's report to `path` after every reported epoch (controller side)."""

    def __init__(self, path: str, keys: tuple[str, ...] = ("epoch",)):
        self.path, self.keys = str(path), keys

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        try:
            m = metrics[0] if metrics else {}
            if "epoch" not in m:
                return
            line = json.dumps({k: m[k] for k in self.keys if k in m}) + "\n"
            with open(self.path, "a", encoding="utf-8") as f:  # one write of one whole line
                f.write(line)
        except Exception as e:  # progress must never take training down
            log.warning("train progress: could not append to %s: %s: %s", self.path, type(e).__name__, e)


def _read_new(path: Path, offset: int, partial: str) -> tuple[int, str, list[dict[str, Any]]]:
    """Records of the complete lines written since `offset`; a trailing partial line is kept for later."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset, partial, []
    text = partial + data.decode("utf-8", errors="replace")
    *lines, rest = text.split("\n")
    out = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.debug("train progress: skipped a malformed line %r", line)
    return offset + len(data), rest, out


@contextlib.contextmanager
def follow(path: Path, on_record: Callable[[dict[str, Any]], None], poll_s: float = POLL_S) -> Iterator[Path]:
    """Start `path` empty and call `on_record(record)` for each line appended to it, from a daemon thread, until
    the block ends; the lines written by then are all delivered (in order) before the block returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    stop = threading.Event()

    def deliver(records: list[dict[str, Any]]) -> None:
        for r in records:
            try:
                on_record(r)
            except Exception:  # a console hiccup must not end the tail (nor training)
                log.exception("train progress: handler failed on %r", r)

    def tail() -> None:
        offset, partial = 0, ""
        while True:
            stopping = stop.wait(poll_s)
            offset, partial, records = _read_new(path, offset, partial)
            deliver(records)
            if stopping:
                return

    t = threading.Thread(target=tail, name=f"train-progress-{path.stem}", daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        t.join(timeout=30)
