"""Assemble the rows Ray Data produced into the dataset tables, purify and split them, write and read them.

Assembly runs on the driver: deduplication, the split by instance, balancing and normalisation statistics
need the whole labelled set, which is small (states, not instances). Tables are sorted by id before
writing, so files do not depend on task order: same config and seed -> byte-identical Parquet.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from .. import atomic
from ..config import Config
from ..features import FEATURE_VERSION, INPUT_FEATURES, INSTANCE_FEATURES, N_INPUT
from . import schema, steps

DETERMINISTIC_FILES = ("states_train.parquet", "states_val.parquet", "states_test.parquet",
                       "states_heldout.parquet", "instances.parquet", "decisions.parquet", "errors.parquet",
                       "manifest.json")


class DatasetError(RuntimeError):
    """A dataset that cannot be built or read; the message names the file or the failing instances."""


@dataclass
class Assembled:
    states: dict[str, pa.Table]
    instances: pa.Table
    decisions: pa.Table
    errors: pa.Table
    timings: pa.Table
    manifest: dict[str, Any]
    purify: dict[str, Any] = field(default_factory=dict)


def _table(rows: list[dict[str, Any]], sch: pa.Schema, sort_key: str | list[str]) -> pa.Table:
    keys = [sort_key] if isinstance(sort_key, str) else sort_key
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in keys))
    return pa.Table.from_pylist(rows, schema=schema.with_feature_metadata(sch))


def assemble(rows: Iterable[dict[str, Any]], cfg: Config) -> Assembled:
    data = cfg.data
    instances, states, decisions, errors, timings = [], [], [], [], []
    dropped_uninformative = 0
    n_total = 0
    for r in rows:
        n_total += 1
        if r["error_json"]:
            errors.append(json.loads(r["error_json"]))
            continue
        inst = steps.loads(r["instance_json"], r["instance_id"])
        trace = json.loads(r["trace_json"])
        st = json.loads(r["states_json"])
        dropped_uninformative += r["dropped_states"]
        spec = {k: r[k] for k in ("instance_id", "base_id", "family", "size", "index", "aug", "heldout")}
        instances.append(steps.instance_row(spec, inst, trace, len(st)))
        for i in range(len(trace["dec_depth"])):
            decisions.append({"instance_id": r["instance_id"], "decision": i, "depth": trace["dec_depth"][i],
                              "n_cands": trace["dec_n_cands"][i], "chosen": trace["dec_chosen"][i],
                              "subtree_nodes": trace["dec_subtree"][i], "solved": trace["dec_solved"][i]})
        for s in st:
            states.append(dict(s, instance_id=r["instance_id"], base_id=r["base_id"], family=r["family"],
                               size=r["size"], heldout=r["heldout"]))
        t = json.loads(r["timing_json"])
        timings.append({"instance_id": r["instance_id"], "node_id": r["node_id"],
                        **{k: t.get(k, 0) for k in ("generate_s", "trace_s", "label_s", "probes", "probe_nodes")}})
    if n_total == 0:
        raise DatasetError("data.generate: no instances to build (every family has count 0?)")
    rate = len(errors) / n_total
    if rate > data.max_error_rate:
        shown = "; ".join(f"{e['instance_id']} (seed {e['seed']}, {e['step']}): {e['message']}" for e in errors[:5])
        raise DatasetError(f"{len(errors)} of {n_total} instances failed ({rate:.1%} > data.max_error_rate="
                           f"{data.max_error_rate:.1%}): {shown}")

    # ---- split by base instance (augmented copies follow their base), stratified by family and size
    split_of = steps.assign_splits([(i["base_id"], i["family"], i["size"]) for i in instances if not i["heldout"]],
                                   (data.split.train, data.split.val, data.split.test), cfg.run.seed)
    for i in instances:
        i["split"] = "heldout" if i["heldout"] else split_of[i["base_id"]]
        del i["heldout"]
    for s in states:
        s["split"] = "heldout" if s.pop("heldout") else split_of[s["base_id"]]

    # ---- purify: deduplicate identical (features, costs) states, then balance the train split
    states.sort(key=lambda s: s["state_id"])
    purify = {"uninformative_dropped": dropped_uninformative, "duplicates_dropped": 0, "balance_dropped": 0}
    if data.purify.dedupe:
        seen, kept = set(), []
        for s in states:
            key = (s["split"], steps.state_key(np.asarray(s["features"], np.float32), np.asarray(s["costs"])))
            if key in seen:
                continue
            seen.add(key)
            kept.append(s)
        purify["duplicates_dropped"] = len(states) - len(kept)
        states = kept
    if data.purify.balance:
        train = [s for s in states if s["split"] == "train"]
        groups = Counter((s["family"], s["size"]) for s in train)
        caps = steps.balance_caps(dict(groups), data.purify.max_group_ratio)
        keep_ids = set()
        for g in groups:
            members = sorted((s["state_id"] for s in train if (s["family"], s["size"]) == g),
                             key=lambda sid: steps.hashlib.sha256(f"{cfg.run.seed}/{sid}".encode()).hexdigest())
            keep_ids.update(members[: caps[g]])
        before = len(states)
        states = [s for s in states if s["split"] != "train" or s["state_id"] in keep_ids]
        purify["balance_dropped"] = before - len(states)
        purify["balance_caps"] = {f"{f}/{z}": c for (f, z), c in sorted(caps.items())}

    by_split = {sp: [s for s in states if s["split"] == sp] for sp in schema.SPLITS}
    state_tables = {sp: _table(rows_, schema.STATES, "state_id") for sp, rows_ in by_split.items()}
    inst_table = _table(instances, schema.INSTANCES, "instance_id")
    manifest = _manifest(cfg, state_tables, inst_table, errors, n_total, purify)
    return Assembled(states=state_tables, instances=inst_table,
                     decisions=_table(decisions, schema.DECISIONS, ["instance_id", "decision"]),
                     errors=_table(errors, schema.ERRORS, "ordinal"),
                     timings=_table(timings, schema.TIMINGS, "instance_id"), manifest=manifest, purify=purify)


def _manifest(cfg: Config, states: dict[str, pa.Table], instances: pa.Table, errors: list[dict], n_total: int,
              purify: dict[str, Any]) -> dict[str, Any]:
    train = states["train"]
    x = flat_features(train)
    train_inst = instances.filter(pa.compute.equal(instances["split"], "train"))
    inst_x = np.asarray(train_inst["features"].to_pylist(), dtype=np.float32).reshape(-1, len(INSTANCE_FEATURES))
    counts = {sp: t.num_rows for sp, t in states.items()}
    orig = sum(1 for t in states.values() for sid in t["instance_id"].to_pylist() if "~a" not in sid)
    total = sum(counts.values())
    return {
        "format": "ray_pipeline.dataset", "version": 1, "feature_version": FEATURE_VERSION,
        "input_features": list(INPUT_FEATURES), "instance_features": list(INSTANCE_FEATURES),
        "top_k": cfg.data.label.top_k, "node_budget": cfg.data.label.node_budget, "seed": cfg.run.seed,
        "config_hash": cfg.section_hash("data"),
        "counts": {"states": counts, "instances": instances.num_rows, "errors": len(errors),
                   "specs": n_total},
        "error_rate": len(errors) / n_total if n_total else 0.0,
        "expansion_factor": round(total / orig, 4) if orig else None,
        "purify": purify,
        "norm": {"input": steps.norm_stats(x), "instance": steps.norm_stats(inst_x)},
    }


def flat_features(states: pa.Table) -> np.ndarray:
    """All candidate rows of a states table as [rows, N_INPUT] float32."""
    if states.num_rows == 0:
        return np.zeros((0, N_INPUT), dtype=np.float32)
    flat = pa.compute.list_flatten(pa.compute.list_flatten(states["features"]))
    return flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, N_INPUT)


def write(a: Assembled, out: Path) -> dict[str, str]:
    """Write every table into `out` (a temp dir the caller renames into place). Returns file -> sha256."""
    for sp, t in a.states.items():
        pq.write_table(t, out / f"states_{sp}.parquet", compression="zstd")
    pq.write_table(a.instances, out / "instances.parquet", compression="zstd")
    pq.write_table(a.decisions, out / "decisions.parquet", compression="zstd")
    pq.write_table(a.errors, out / "errors.parquet", compression="zstd")
    pq.write_table(a.timings, out / "timings.parquet", compression="zstd")
    files = {f.name: atomic.sha256_file(f) for f in sorted(out.glob("*.parquet"))}
    m = dict(a.manifest, files={k: v for k, v in files.items() if k != "timings.parquet"})
    atomic.write_json(out / "manifest.json", m)
    return files


def content_hash(path: Path) -> str:
    """Hash of the deterministic files only: timings and the report do not invalidate later stages."""
    h = steps.hashlib.sha256()
    for name in DETERMINISTIC_FILES:
        h.update(name.encode())
        h.update(atomic.sha256_file(path / name).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ reading
def read_manifest(path: Path) -> dict[str, Any]:
    f = Path(path) / "manifest.json"
    if not f.exists():
        raise DatasetError(f"{f}: missing dataset manifest (run `ray-pipeline generate` first)")
    try:
        m = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != "ray_pipeline.dataset":
        raise DatasetError(f"{f}: not a ray_pipeline dataset manifest")
    if m.get("feature_version") != FEATURE_VERSION:
        raise DatasetError(f"{f}: dataset has features {m.get('feature_version')!r}, this code "
                           f"{FEATURE_VERSION!r}; regenerate the dataset (ray-pipeline generate --force)")
    return m


def read_table(path: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    f = Path(path) / name
    if not f.exists():
        raise DatasetError(f"{f}: missing dataset file")
    try:
        return pq.read_table(f, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{f}: unreadable Parquet ({str(e)[:200]}); regenerate with --force") from None


def read_states(path: Path, split: str) -> pa.Table:
    if split not in schema.SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose from {schema.SPLITS}")
    t = read_table(path, f"states_{split}.parquet")
    missing = set(schema.STATES.names) - set(t.column_names)
    if missing:
        raise DatasetError(f"{Path(path) / f'states_{split}.parquet'}: missing columns {sorted(missing)}")
    return t


def to_arrays(batch: dict[str, Any] | pa.Table, k_max: int, soft_temperature: float | None = None
              ) -> dict[str, np.ndarray]:
    """Pad a batch of states to k_max candidates: the model input format (x, mask, target, costs, best).

    `target` is uniform over the tied-best candidates; `best` is the first of them.
    Used by Ray Data `map_batches` (training) and by local evaluation: one conversion for both.
    """
    if isinstance(batch, pa.Table):
        n_cands = batch["n_cands"].to_numpy().astype(np.int64)
        feats = pa.compute.list_flatten(pa.compute.list_flatten(batch["features"])).to_numpy(zero_copy_only=False)
        costs = pa.compute.list_flatten(batch["costs"]).to_numpy(zero_copy_only=False)
    else:
        n_cands = np.asarray(batch["n_cands"], dtype=np.int64)
        feats = np.concatenate([np.concatenate([np.asarray(c, np.float32) for c in f]) for f in batch["features"]]) \
            if len(n_cands) else np.zeros(0, np.float32)
        costs = np.concatenate([np.asarray(c, np.float32) for c in batch["costs"]]) if len(n_cands) else np.zeros(0)
    n = len(n_cands)
    x = np.zeros((n, k_max, N_INPUT), dtype=np.float32)
    c = np.full((n, k_max), np.inf, dtype=np.float32)
    mask = np.zeros((n, k_max), dtype=bool)
    feats = feats.astype(np.float32).reshape(-1, N_INPUT)
    offs = np.concatenate([[0], np.cumsum(n_cands)])
    for i in range(n):
        k = min(int(n_cands[i]), k_max)
        x[i, :k] = feats[offs[i]: offs[i] + k]
        c[i, :k] = costs[offs[i]: offs[i] + k]
        mask[i, :k] = True
    best_cost = c.min(axis=1, keepdims=True)
    ties = mask & (c == best_cost)
    target = ties / np.maximum(ties.sum(axis=1, keepdims=True), 1)
    out = {"x": x, "mask": mask, "target": target.astype(np.float32), "best": np.argmax(ties, axis=1),
           "costs": np.where(mask, c, 0.0).astype(np.float32)}
    if soft_temperature is not None:
        out["soft"] = soft_target(out["costs"], mask, soft_temperature)
    return out


def soft_target(costs: np.ndarray, mask: np.ndarray, t: float) -> np.ndarray:
    """softmax(-log(cost / min cost) / T) over the valid candidates: cheap candidates share the mass, and a
    candidate 10x worse than the best gets almost none (the plain target ignores how much worse it is)."""
    c = np.where(mask, np.maximum(costs, 1.0), np.inf)
    z = -(np.log(c) - np.log(c.min(axis=1, keepdims=True))) / t
    z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return (e / np.maximum(e.sum(axis=1, keepdims=True), 1e-30)).astype(np.float32)


def cost_rows(dataset_dir: Path, splits: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """The cost predictor's data for the instances of `splits`: x = instance features, y = log_cost_targets.
    The one place that joins instances with their timings (training, export calibration and evaluation)."""
    inst = read_table(dataset_dir, "instances.parquet", columns=["instance_id", "split", "features", "nodes"])
    inst = inst.filter(pa.compute.is_in(inst["split"], value_set=pa.array(list(splits))))
    timings = read_table(dataset_dir, "timings.parquet", columns=["instance_id", "trace_s"])
    x = np.asarray(inst["features"].to_pylist(), dtype=np.float32).reshape(inst.num_rows, len(INSTANCE_FEATURES))
    return {"x": x, "y": log_cost_targets(inst, timings)}


def log_cost_targets(instances: pa.Table, timings: pa.Table | None) -> np.ndarray:
    """Cost-predictor targets per instance: [log1p(nodes), log(seconds)] of the baseline solve."""
    nodes = instances["nodes"].to_numpy().astype(np.float64)
    secs = np.full(len(nodes), math.nan)
    if timings is not None and timings.num_rows:
        t = dict(zip(timings["instance_id"].to_pylist(), timings["trace_s"].to_pylist()))
        secs = np.array([t.get(i, math.nan) for i in instances["instance_id"].to_pylist()], dtype=np.float64)
    return np.stack([np.log1p(nodes), np.log(np.maximum(secs, 1e-5))], axis=1).astype(np.float32)
