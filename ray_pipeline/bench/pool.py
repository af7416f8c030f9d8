"""The benchmarks' worker pool: spawned processes, stopped at once when the run is interrupted."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Optional


def spawn_map(fn: Callable, jobs: list, workers: int, initializer: Optional[Callable] = None,
              initargs: tuple = ()) -> list[Any]:
    """`fn` over `jobs` in at most `workers` spawned processes (spawn, not fork: the caller may hold Ray's, torch's
    or ONNX Runtime's threads; tests run benchmarks beside a Ray session), results in job order.

    A worker that dies fails the run (BrokenProcessPool) instead of hanging it, as multiprocessing.Pool would.
    On any exception -- Ctrl-C, SIGTERM (the CLI makes it SystemExit while a bench runs) or a failed job -- the
    workers are terminated now: the executor's own shutdown would wait for their current job, minutes at RB n=50."""
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                               mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                               initargs=initargs)
    try:
        results = list(pool.map(fn, jobs))
    except BaseException:
        _terminate_workers(pool)
        raise
    pool.shutdown()
    return results


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())  # 3.11-3.13: no public way to reach them
    for p in procs:
        p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=10)


def flatten(parts: Iterable[list]) -> list:
    return [x for part in parts for x in part]
