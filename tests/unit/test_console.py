"""The console of a pipeline run: what a person sees, and that everything else lands in the run's log file.

Each case runs a real process (the routing works on file descriptors, which pytest's own capture replaces)."""
import os
import pty
import subprocess
import sys
import textwrap

from ..conftest import REPO

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from pathlib import Path
    from ray_pipeline import console
    from ray_pipeline.runtime import configure_logging

    configure_logging("INFO")
    with console.session(Path(sys.argv[1]), verbose=sys.argv[2] == "1") as con:
        print("NOISE print from a library")
        os.write(2, b"NOISE native write to fd 2\\n")
        warnings.warn("NOISE FutureWarning", FutureWarning)
        logging.getLogger("ray_pipeline.data.stage").info("NOISE info log")
        console.stage_event("start", "generate", "stage %s: running", "generate")
        console.progress("generate", 2, 4, "instances")
        console.progress("generate", 4, 4, "instances")
        logging.getLogger("ray_pipeline.problems.readers").warning("x.col:3: self-loop dropped")
        console.stage_event("done", "generate", "stage %s: done", "generate", seconds=1.25)
        console.stage_event("skipped", "train", "stage %s: skipped", "train")
        con.print("run directory: /somewhere")
    print("after the session")
""")


def _run(tmp_path, verbose: bool) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "logs" / "run.log"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p, log.read_text()


def test_quiet_console_is_one_line_per_stage_and_the_rest_goes_to_the_log(tmp_path):
    p, log = _run(tmp_path, verbose=False)
    assert p.stdout.splitlines() == [
        "warning: x.col:3: self-loop dropped",
        "generate  done     1.2 s  (4/4 instances)",
        "train     up to date, skipped",
        "run directory: /somewhere",
        "after the session",  # the terminal is back once the run is over
    ]
    assert p.stderr == ""
    for noise in ("NOISE print from a library", "NOISE native write to fd 2", "NOISE FutureWarning",
                  "NOISE info log", "generate: 2/4 instances", "stage generate: done"):
        assert noise in log, noise
    assert "after the session" not in log


def test_verbose_keeps_the_full_stream_and_still_writes_the_log(tmp_path):
    p, log = _run(tmp_path, verbose=True)
    both = p.stdout + p.stderr
    for noise in ("NOISE print from a library", "NOISE native write to fd 2", "NOISE FutureWarning",
                  "NOISE info log", "generate: 2/4 instances"):
        assert noise in both, noise
    assert "NOISE info log" in log and "generate: 2/4 instances" in log


def test_in_a_terminal_the_stage_line_is_live(tmp_path):
    """On a pty: the running line is redrawn in place (carriage return) with the progress, then finished."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "run.log"), "0"], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    out = b"".join(chunks).decode()
    assert "\rgenerate  2/4 instances" in out and "\rgenerate  4/4 instances" in out
    assert "generate  done     1.2 s  (4/4 instances)\r\n" in out
    assert "NOISE" not in out
