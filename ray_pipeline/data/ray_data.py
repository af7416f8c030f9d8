"""Thin Ray Data adapters: put the pure steps of `steps.py` on blocks of instances.

Rows are instances; intermediate results travel as JSON strings in fixed-schema columns, so every block has
the same Arrow schema whatever happened in it (an error in one instance never changes a column type).
generate -> trace -> label -> drop-uninformative run in one worker-actor call per block; blocks are sized from
`data.instances_per_block`, not Ray's 200-block default for `from_items`.

A crash of the native core (a segfault kills the worker process, so no exception reaches Python) is
quarantined like any error: before each instance's step the worker leaves a marker in the build's journal
directory and removes it after; Ray Data restarts a worker actor that died and retries its blocks, and the
retry finds the marker, records the instance (with its seed) as failed and goes on with the rest of its block
(a block queued behind it on the same actor is retried too and runs normally: markers are per instance).
Ray Data would otherwise retry a deterministic crash forever. The journal is node-local (the temp directory of
whichever node runs the block: workers never read the run directory, which may live on the driver's disk
only); a retry placed on another node crashes there once more, leaves its marker, and the next retry
quarantines the instance.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import pyarrow as pa

from ..config import SIZES, DataSection, DebugSection
from . import steps

ROW_SCHEMA = pa.schema([
    ("ordinal", pa.int64()), ("instance_id", pa.string()), ("base_id", pa.string()), ("family", pa.string()),
    ("size", pa.string()), ("index", pa.int64()), ("aug", pa.int64()), ("heldout", pa.bool_()),
    ("params_json", pa.string()), ("base_seed", pa.int64()),
    ("instance_json", pa.string()), ("trace_json", pa.string()), ("states_json", pa.string()),
    ("error_json", pa.string()), ("timing_json", pa.string()), ("dropped_states", pa.int64()),
    ("node_id", pa.string()),
])
_DEFAULTS = {"instance_json": "", "trace_json": "", "states_json": "[]", "error_json": "", "timing_json": "{}",
             "dropped_states": 0, "node_id": ""}


def _rows(batch: pa.Table) -> list[dict[str, Any]]:
    return [dict(_DEFAULTS, **r) for r in batch.to_pylist()]


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _spec(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("ordinal", "instance_id", "base_id", "family", "size", "index", "aug", "heldout",
                              "params_json", "base_seed")}


def _fail(r: dict[str, Any], step: str, e: Exception) -> None:
    seed = steps.derive_seed(r["base_seed"], r["family"], r["size"], r["index"])
    r["error_json"] = json.dumps({"instance_id": r["instance_id"], "ordinal": r["ordinal"], "family": r["family"],
                                  "size": r["size"], "index": r["index"], "aug": r["aug"], "seed": seed,
                                  "step": step, "message": f"{type(e).__name__}: {e}"[:1000]})


class WorkerDied(RuntimeError):
    """The worker process died inside this instance's step (seen by the retry of its block)."""


def _timing(r: dict[str, Any], **kw: float) -> None:
    t = json.loads(r["timing_json"])
    t.update(kw)
    r["timing_json"] = json.dumps(t)


# ------------------------------------------------------------------------------------------ steps
def _each(rows: list[dict[str, Any]], step: str, fn, journal: Optional[str]) -> None:
    """Apply `fn(row)` to every row not already failed; time it; quarantine what it raises, and what killed
    the worker process of an earlier attempt (see the module docstring)."""
    import time

    for r in rows:
        if r["error_json"]:
            continue
        mark = Path(journal) / f"{r['ordinal']}.{step}" if journal else None
        if mark is not None and mark.exists():
            _fail(r, step, WorkerDied(
                f"the worker process died during this step ({mark.read_text()}): a crash of the native solver "
                f"core is the likely cause; reproduce it with the instance's seed below"))
            continue
        if mark is not None:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(f"pid {os.getpid()} on {socket.gethostname()}")
        t0 = time.perf_counter()
        try:
            extra = fn(r) or {}
        except Exception as e:
            _fail(r, step, e)
            extra = {}
        _timing(r, **{f"{step}_s": time.perf_counter() - t0}, **extra)
        if mark is not None:
            mark.unlink()


def generate_rows(rows: list[dict[str, Any]], debug: Optional[DebugSection], journal: Optional[str]) -> None:
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def one(r: dict[str, Any]) -> None:
        r["node_id"] = node
        r["instance_json"] = steps.dumps(steps.build_instance(_spec(r), debug))

    _each(rows, "generate", one, journal)


def trace_rows(rows: list[dict[str, Any]], data: DataSection, debug: Optional[DebugSection],
               journal: Optional[str]) -> None:
    def one(r: dict[str, Any]) -> None:
        if debug is not None and debug.segfault_instance == r["ordinal"]:
            import ctypes

            ctypes.string_at(0)  # a real SIGSEGV of this worker process, as a crash of the core would be
        inst = steps.loads(r["instance_json"], r["instance_id"])
        r["trace_json"] = json.dumps(steps.trace_instance(inst, data))

    _each(rows, "trace", one, journal)


def label_rows(rows: list[dict[str, Any]], data: DataSection, journal: Optional[str]) -> None:
    def one(r: dict[str, Any]) -> dict[str, int]:
        inst = steps.loads(r["instance_json"], r["instance_id"])
        states, probe_stats = steps.label_instance(inst, json.loads(r["trace_json"]), data, r["base_seed"],
                                                   r["heldout"])
        r["states_json"] = json.dumps(states)
        return probe_stats

    _each(rows, "label", one, journal)


def drop_uninformative_rows(rows: list[dict[str, Any]], data: DataSection) -> None:
    """Purify, the row-local part: states whose probes cannot teach anything are dropped here."""
    for r in rows:
        states = json.loads(r["states_json"])
        keep = [s for s in states if steps.is_informative(s["costs"], s["censored"], data.label.min_candidates)]
        r["dropped_states"] = len(states) - len(keep)
        r["states_json"] = json.dumps(keep)


def process_batch(batch: pa.Table, data: DataSection, debug: Optional[DebugSection], journal: str) -> pa.Table:
    """One block's work: every step on its rows, one Arrow <-> rows conversion each way."""
    rows = _rows(batch)
    generate_rows(rows, debug, journal)
    trace_rows(rows, data, debug, journal)
    label_rows(rows, data, journal)
    drop_uninformative_rows(rows, data)
    return _table(rows)


class BlockWorker:
    """`process_batch` in a long-lived actor. Actors, not tasks: an actor takes its next block while it still
    works on this one (two in flight), so no worker waits on the scheduler between blocks. On 2 CPUs tasks
    lost ~0.25 s a block that way (workers 85-93% busy); see the README's dataset-stage figures."""

    def __call__(self, batch: pa.Table, data: DataSection, debug: Optional[DebugSection], journal: str) -> pa.Table:
        return process_batch(batch, data, debug, journal)


# ------------------------------------------------------------------------------------------ adapter
def num_blocks(n_specs: int, instances_per_block: int) -> int:
    return max(1, math.ceil(n_specs / instances_per_block))


# Blocks of the largest instances go first (longest-processing-time order): the cheap ones fill in at the end,
# so no worker waits on a last slow block (in spec order, the run ended on the larger size's blocks).
_SIZE_FIRST = {z: i for i, z in enumerate(reversed(SIZES))}  # SIZES runs smallest first


def build(specs: list[dict[str, Any]], data: DataSection, debug: Optional[DebugSection] = None,
          workers: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Run generate -> trace -> label -> drop-uninformative on Ray Data; yield rows as blocks finish, largest
    sizes first (callers that need spec order sort by `ordinal`; the data stage does).

    `workers` is the number of worker actors (the data benchmark compares 1 and 2); None = one per whole CPU
    of the live nodes, at most one per block. The pool does not grow: an autoscaling cluster is sized at the
    start of the build. A worker that dies is restarted and its blocks retried, which the journal relies on to
    quarantine the instance that killed it.
    """
    import ray
    import ray.data

    journal = Path(tempfile.gettempdir()) / f"ray-pipeline-inflight-{uuid.uuid4().hex}"  # per node, see above
    journal.mkdir(parents=True)
    try:
        order = sorted(specs, key=lambda s: (_SIZE_FIRST.get(s["size"], len(_SIZE_FIRST)), s["ordinal"]))
        blocks = num_blocks(len(specs), data.instances_per_block)
        ds = ray.data.from_items(order, override_num_blocks=blocks)
        # Settings for this dataset only (`ds.context` is its own copy of the DataContext):
        # - every actor is up before the first block goes out (else the first one up takes two blocks at once
        #   and a small run never reaches the second node); bounded, so a pool the cluster cannot place fails
        #   with Ray Data's timeout error instead of waiting;
        # - blocks go to the least busy actor, not to one on the node that holds the block: the input blocks
        #   are instance specs made on the driver, so locality sent every block to the head's actor. The
        #   setter is deprecated (Ray Data "manages locality internally" after January 2027); its warning is
        #   silenced here, the behaviour is checked by the multi-node test.
        ds.context.wait_for_min_actors_s = 300
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ds.context.execution_options.actor_locality_enabled = False
        slots = sum(int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"])  # whole CPUs a node
        size = workers or max(1, min(blocks, slots))
        compute = ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2)
        # Restart a dead worker and retry its blocks, without limit (Ray Data's defaults for actor pools, spelled
        # out because the crash journal depends on them); the journal ends a deterministic crash's retries.
        kw = dict(batch_format="pyarrow", batch_size=None, compute=compute, zero_copy_batch=False, num_cpus=1,
                  max_restarts=-1, max_task_retries=-1)
        ds = ds.map_batches(BlockWorker, fn_kwargs={"data": data, "debug": debug, "journal": str(journal)}, **kw)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            yield from batch.to_pylist()
    finally:
        shutil.rmtree(journal, ignore_errors=True)
