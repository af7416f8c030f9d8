"""What a person running the pipeline sees, and where everything else goes.

Console: one line per stage (live progress and elapsed time in a terminal; one finished line per stage without
one, e.g. in CI), our own warnings, and a short summary printed by the CLI. Everything else -- Ray's and its
workers' output, Ray Train's reports, library warnings, our INFO logs -- goes to `<run>/logs/run.log`.
`--verbose` keeps the full stream on the terminal (and still writes the log file).

Stages report through logging, so the same calls give log lines in the file (and in `--verbose`) and the live
console line: `stage_event(...)` from the orchestrator, `progress(...)` from a stage that knows how far it is.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterator, Optional

PROGRESS = "ray_pipeline.progress"
_plog = logging.getLogger(PROGRESS)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def progress(stage: str, done: int, total: int, unit: str, label: str = "") -> None:
    """`done` of `total` `unit` of `stage` finished (cheap: call it as often as the stage learns something);
    `label` names the part of the stage they belong to (e.g. the model being trained: "teacher 12/40 epochs")."""
    _plog.info("%s: %s", stage, _detail(done, total, unit, label),
               extra={"progress": (stage, done, total, unit, label)})


def _detail(done: int, total: int, unit: str, label: str = "") -> str:
    return f"{label} {done}/{total} {unit}" if label else f"{done}/{total} {unit}"


def stage_event(event: str, stage: str, message: str, *args, seconds: Optional[float] = None,
                level: int = logging.INFO) -> None:
    """`event` in start | done | skipped | failed; `message % args` is the log line."""
    _plog.log(level, message, *args, extra={"stage_event": (event, stage, seconds)})


class ConsoleHandler(logging.Handler):
    """Renders stage events and progress as one line per stage; shows WARNING+ of ray_pipeline as is."""

    def __init__(self, stream: IO[str], live: bool):
        super().__init__(logging.DEBUG)
        self.stream, self.live = stream, live
        self._lock = threading.Lock()
        self._stage: Optional[str] = None
        self._t0 = 0.0
        self._detail = ""
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        if live:  # elapsed time keeps moving in a terminal even when a stage reports no progress
            self._ticker = threading.Thread(target=self._tick, name="console-ticker", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._stage:
                    self._render()

    def _render(self) -> None:
        line = f"{self._stage:<9} {self._detail or 'running'}  {time.perf_counter() - self._t0:6.0f} s"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self.live and self._stage:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        if self.live and self._stage:
            self._render()
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self._lock:
                ev = getattr(record, "stage_event", None)
                pr = getattr(record, "progress", None)
                if ev:
                    self._on_stage(*ev)
                elif pr:
                    stage, *count = pr
                    if stage == self._stage:
                        self._detail = _detail(*count)
                        if self.live:
                            self._render()
                elif record.levelno >= logging.WARNING:
                    self._line(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)

    def _on_stage(self, event: str, stage: str, seconds: Optional[float]) -> None:
        if event == "start":
            self._stage, self._t0, self._detail = stage, time.perf_counter(), ""
            if self.live:
                self._render()
            return
        secs = seconds if seconds is not None else (time.perf_counter() - self._t0 if self._stage == stage else 0.0)
        detail = f"  ({self._detail})" if self._detail and self._stage == stage else ""
        word = {"done": "done", "skipped": "up to date, skipped", "failed": "FAILED"}[event]
        text = f"{stage:<9} {word}" + (f"  {secs:6.1f} s{detail}" if event != "skipped" else "")
        if self.live:
            self.stream.write("\r\x1b[K")
        self._stage, self._detail = None, ""
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join(timeout=2)
        super().close()


class Console:
    """Where the CLI prints what a person reads (the summary, errors): the terminal, whatever fd 1/2 became."""

    def __init__(self, out: IO[str], err: IO[str], log_path: Path):
        self.out, self.err, self.log_path = out, err, log_path

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def _fd_backed(stream: object, fd: int) -> bool:
    try:
        return stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def session(log_path: Path, verbose: bool) -> Iterator[Console]:
    """Route output for one pipeline run: see the module docstring.

    Ray's workers, its log monitor and native libraries (ONNX Runtime, torch) write to file descriptors 1 and 2,
    not through Python, so quiet mode points those descriptors at the log file; the console keeps duplicates
    of the originals. Only a real process does that: inside pytest (stdout already replaced) output stays put.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
    file_handler.setLevel(logging.DEBUG)
    root.addHandler(file_handler)
    if verbose:
        try:
            yield Console(sys.stdout, sys.stderr, log_path)
        finally:
            root.removeHandler(file_handler)
            file_handler.close()
        return

    redirect = _fd_backed(sys.stdout, 1) and _fd_backed(sys.stderr, 2)
    saved: list[int] = []
    if redirect:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
        err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    else:
        out, err = sys.stdout, sys.stderr
    # the terminal handlers of configure_logging would now write into the log file a second time
    muted = [(h, h.level) for h in root.handlers if h is not file_handler and isinstance(h, logging.StreamHandler)
             and getattr(h, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)]
    for h, _ in muted:
        h.setLevel(logging.CRITICAL + 1)
    was_capturing = getattr(logging, "_warnings_showwarning", None) is not None
    logging.captureWarnings(True)  # warnings.warn(...) of torch, ONNX, Ray -> the log file
    console = ConsoleHandler(out, live=out.isatty())
    pkg = logging.getLogger("ray_pipeline")
    pkg.addHandler(console)
    try:
        yield Console(out, err, log_path)
    finally:
        pkg.removeHandler(console)
        console.close()
        if not was_capturing:
            logging.captureWarnings(False)
        for h, level in muted:
            h.setLevel(level)
        root.removeHandler(file_handler)
        file_handler.close()
        if redirect:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            out.close()
            err.close()
