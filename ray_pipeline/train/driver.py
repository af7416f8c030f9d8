"""The Ray side of training: Ray Data inputs, the TorchTrainer that runs `loop.train_fn`, teachers for students.

[1] datasets   Ray Data reads the Parquet splits and pads states to K candidates (`dataset.to_arrays`)
[2] trainer    TorchTrainer(train_fn, ScalingConfig, RunConfig(storage_path, name)) -- a stable name makes a
               re-run resume from the latest checkpoint, FailureConfig restarts a crashed worker group
[3] teachers   a student's teachers go to its workers as file contents; each worker scores its shard with them
               (a separate soft-label pass cost ~30 s of Ray Data start-up per split on the demo's 1k states)
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from ..config import Config, LoopConfig, stable_hash
from ..data import dataset as ds_lib
from ..kinds import kind_of
from ..models import io as model_io
from ..paths import RunPaths
from ..storage import Storage, pack

log = logging.getLogger(__name__)

def score_of(cfg: Config, kind: str) -> tuple[str, str]:
    """The validation metric that selects checkpoints and stops early, and its direction."""
    if kind_of(kind).select:
        return kind_of(kind).select
    m = cfg.train.select_metric
    return m, "max" if m == "val_top1" else "min"


# ------------------------------------------------------------------------------------------ [1] datasets
def _pad_batch(batch: pa.Table, k_max: int, target: str, temperature: float,
               families: Optional[list[str]]) -> dict[str, np.ndarray]:
    """`target` (ties at the best cost) drives the metrics; `label` is what the loss trains towards."""
    if families:
        batch = batch.filter(pa.compute.is_in(batch["family"], value_set=pa.array(families)))
    a = ds_lib.to_arrays(batch, k_max, soft_temperature=temperature if target == "soft" else None)
    if target == "soft":
        label = a["soft"]
    elif target == "binary":  # 1 on every tied-best candidate
        label = (a["target"] > 0).astype(np.float32)
    else:
        label = a["target"]
    out = {"x": a["x"], "mask": a["mask"], "target": a["target"], "best": a["best"], "costs": a["costs"],
           "label": label}
    if "state_id" in batch.column_names:
        out["state_id"] = np.asarray(batch["state_id"].to_pylist(), dtype=object)
    return out


def scorer_dataset(dataset_dir: Path, split: str, k_max: int, target: str = "best", temperature: float = 0.5,
                   families: Optional[list[str]] = None, storage: Optional[Storage] = None):
    """Ray Data reads the split from the run's storage (its read tasks may run on any node); the driver's own
    copy under `dataset_dir` is checked first, for a clear error naming a missing or corrupt file."""
    import ray.data

    path = Path(dataset_dir) / f"states_{split}.parquet"
    ds_lib.read_table(path.parent, path.name, columns=["n_cands"])  # a clear error for a missing/corrupt file
    src, fs = (storage.path(path), storage.filesystem()) if storage is not None else (str(path), None)
    ds = ray.data.read_parquet(src, filesystem=fs, columns=["family", "n_cands", "features", "costs"])
    ds = ds.map_batches(_pad_batch, fn_kwargs={"k_max": k_max, "target": target, "temperature": temperature,
                                               "families": families}, batch_format="pyarrow", batch_size=512)
    # materialised once: every epoch (and every Tune trial) then streams from the object store instead of
    # re-reading and re-padding
    return ds.materialize()


def graph_batch(batch: pa.Table, k_max: int, n_max: int, target: str, temperature: float, families: list[str],
                 instances: dict[str, str], trace) -> dict[str, np.ndarray]:
    """A graph kind's batch: the padded states of `families` (as `_pad_batch`) and their graphs, in row order.
    Ray Data's map_batches runs it for training, the train stage on the test split."""
    from ..data.graphs import graph_arrays

    batch = batch.filter(pa.compute.is_in(batch["family"], value_set=pa.array(families)))
    out = _pad_batch(batch.drop_columns(["state_id"]), k_max, target, temperature, None)  # ids: for errors only
    out.update(graph_arrays(batch, instances, trace, k_max, n_max))
    return out


def graph_inputs(dataset_dir: Path, families: list[str], split: str) -> tuple[dict[str, str], int]:
    """The split's graph-family instances (JSON by id) and the node count its graphs are padded to."""
    from ..data.graphs import graph_families_n

    inst = ds_lib.read_table(Path(dataset_dir), "instances.parquet",
                             columns=["instance_id", "family", "split", "n_vars", "instance_json"])
    return graph_families_n(inst, families, split, str(Path(dataset_dir) / "instances.parquet"))


def graph_dataset(dataset_dir: Path, split: str, k_max: int, target: str, temperature: float, families: list[str],
                  trace, storage: Optional[Storage] = None):
    """As `scorer_dataset`, with each state's constraint graph rebuilt by replaying its instance's trace
    (data.graphs): the states of `families` only."""
    import ray.data

    path = Path(dataset_dir) / f"states_{split}.parquet"
    ds_lib.read_table(path.parent, path.name, columns=["n_cands"])
    instances, n_max = graph_inputs(dataset_dir, families, split)
    src, fs = (storage.path(path), storage.filesystem()) if storage is not None else (str(path), None)
    ds = ray.data.read_parquet(src, filesystem=fs, columns=["state_id", "instance_id", "decision", "family",
                                                             "n_cands", "candidates", "features", "costs"])
    ds = ds.map_batches(graph_batch, fn_kwargs={"k_max": k_max, "n_max": n_max, "target": target,
                                                 "temperature": temperature, "families": families,
                                                 "instances": instances, "trace": trace},
                        batch_format="pyarrow", batch_size=512)
    return ds.materialize()


def cost_dataset(dataset_dir: Path, split: str):
    import ray.data

    rows = ds_lib.cost_rows(dataset_dir, [split])
    x, y = rows["x"], rows["y"]
    return ray.data.from_items([{"x": x[i], "y": y[i]} for i in range(len(x))],
                               override_num_blocks=max(1, min(4, len(x)))).materialize()


def teacher_files(cfg: Config, paths: RunPaths, teachers: dict[str, float]) -> dict[str, dict[str, str]]:
    """[3] The teachers a student distils from, as base64 file contents for its Train workers: each worker scores
    its own shard with them once (no separate soft-label pass over the dataset), on whatever node it runs."""
    out = {}
    want = score_kind(cfg)
    for name in teachers:
        mdir = paths.model(name)
        if not (mdir / "model.pt").exists():
            raise model_io.ModelError(f"{mdir}: teacher {name!r} (train.student.distill.teachers) "
                                      f"has no trained model")
        _, spec = model_io.load(mdir)  # a damaged teacher fails here, naming its file, not inside a worker
        if spec.get("scores", "listwise") != want:  # softmax logits read as sigmoids (or back) would train silently
            raise model_io.ModelError(f"{mdir / 'model.json'}: teacher {name!r} has {spec.get('scores', 'listwise')} "
                                      f"scores, this config (train.target={cfg.train.target}) trains {want} ones: "
                                      "retrain the teacher with this train.target")
        out[name] = {n: base64.b64encode(b).decode() for n, b in pack(mdir, ("model.pt", "model.json")).items()}
    return out


def training_datasets(cfg: Config, paths: RunPaths, storage: Storage, kind: str, manifest: dict[str, Any]
                      ) -> dict[str, Any]:
    """Train and val datasets of one model kind (a student reads the teacher's; its workers add the teachers'
    logits themselves, see `teacher_files`)."""
    if not kind_of(kind).scorer:
        return {sp: cost_dataset(paths.dataset, sp) for sp in ("train", "val")}
    sync_dataset(paths, storage)
    if kind_of(kind).graph:
        return {sp: graph_dataset(paths.dataset, sp, manifest["top_k"], cfg.train.target, cfg.train.target_temperature,
                                  cfg.train.families_of(kind), cfg.data.trace, storage=storage) for sp in ("train", "val")}
    return {sp: scorer_dataset(paths.dataset, sp, manifest["top_k"], cfg.train.target, cfg.train.target_temperature,
                               cfg.train.families, storage=storage) for sp in ("train", "val")}


def sync_dataset(paths: RunPaths, storage: Storage) -> None:
    """Upload the driver's dataset to the run's storage, once per dataset version (no-op on a shared disk)."""
    if not storage.shared_with_run_dir:
        storage.sync_dir(paths.dataset)


# ------------------------------------------------------------------------------------------ [2] trainer
def model_section(cfg: Config, kind: str) -> dict[str, Any]:
    return cfg.train.model_dump(mode="json")[kind]


def hparams_of(kind: str, section: dict[str, Any]) -> dict[str, Any]:
    return {k: section[k] for k in kind_of(kind).hparams}


def score_kind(cfg: Config) -> str:
    """What this config's scorers output: per-candidate sigmoid logits (binary) or softmax logits (listwise)."""
    return "binary" if cfg.train.target == "binary" else "listwise"


def model_spec(cfg: Config, kind: str, section: dict[str, Any], norm: dict[str, list[float]], **extra: Any
               ) -> dict[str, Any]:
    """model.json of a `kind` model this config trains; a scorer's also says what its scores mean (binary:
    per-candidate sigmoid logits; listwise: softmax logits), which its loss and its calibration read."""
    if kind_of(kind).scorer:
        extra["scores"] = score_kind(cfg)
    if kind_of(kind).graph:
        from ..graph import GRAPH_VERSION

        extra["graph_version"] = GRAPH_VERSION
    return model_io.make_spec(kind, hparams_of(kind, section), norm, seed=cfg.run.seed, **extra)


def train_key(cfg: Config, kind: str, section: dict[str, Any], dataset_hash: str) -> str:
    """Identity of one training run: a new key starts fresh, the same key resumes its checkpoints."""
    key = {"kind": kind, "section": section, "dataset": dataset_hash, "seed": cfg.run.seed,
           "target": [cfg.train.target, cfg.train.target_temperature, cfg.train.select_metric],
           # a graph kind's families are in its section; its inputs also follow the graph's definition
           "families": cfg.train.families if kind_of(kind).scorer and not kind_of(kind).graph else None,
           "nan_at": cfg.debug.nan_loss_at_step}
    if kind_of(kind).graph:
        from ..graph import GRAPH_VERSION

        key["graph_version"] = GRAPH_VERSION
    return stable_hash(key)


def loop_config(cfg: Config, paths: RunPaths, kind: str, section: dict[str, Any], spec: dict[str, Any],
                marker_dir: Path, teachers: Optional[dict[str, dict[str, str]]] = None) -> LoopConfig:
    """`section` is train.<kind> as a dict (Tune overrides some of its values per trial)."""
    score, mode = score_of(cfg, kind)
    return LoopConfig(kind=kind, optim=section["optim"], spec=spec, seed=cfg.run.seed, score=score, score_mode=mode,
                      nan_retries=cfg.train.nan_retries, nan_lr_factor=cfg.train.nan_lr_factor,
                      mixed_precision=cfg.train.mixed_precision and cfg.train.use_gpu, debug=cfg.debug,
                      marker_dir=str(marker_dir), run_name=cfg.run.name, wandb_dir=str(paths.wandb),
                      wandb_project=cfg.tracking.wandb_project, distill=section.get("distill"),
                      cache_shards=cfg.train.cache_shards, teacher_files=teachers or {})


def make_trainer(cfg: Config, loop_cfg: LoopConfig, datasets: dict[str, Any], storage: Storage, parent: Path,
                 name: str, num_workers: Optional[int] = None, callbacks: Optional[list] = None):
    """A TorchTrainer whose run `name` (checkpoints, controller snapshot) lives in storage at `parent`, a
    run-directory path (`Storage` maps it to the run's storage)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    n = cfg.train.num_workers if num_workers is None else num_workers
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    score, mode = loop_cfg.score, loop_cfg.score_mode
    return TorchTrainer(
        _train_fn_entry,
        train_loop_config=loop_cfg.model_dump(mode="json"),
        scaling_config=ray.train.ScalingConfig(num_workers=n, use_gpu=cfg.train.use_gpu,
                                               resources_per_worker=resources if n else None),
        run_config=ray.train.RunConfig(
            name=name, **storage.run_config(parent),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures,
                                                   controller_failure_limit=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                                         checkpoint_score_attribute=score,
                                                         checkpoint_score_order=mode),
            callbacks=callbacks),
        datasets=datasets)


def _train_fn_entry(c: dict[str, Any]) -> None:
    from .loop import train_fn

    train_fn(LoopConfig.model_validate(c))


def best_checkpoint(result, score: str, mode: str):
    """The best reported checkpoint by the validation metric (the latest if none carries the metric)."""
    pairs = [(ck, m) for ck, m in (result.best_checkpoints or []) if ck is not None and score in (m or {})]
    if not pairs:
        return result.checkpoint
    key = (lambda p: p[1][score]) if mode == "min" else (lambda p: -p[1][score])
    return sorted(pairs, key=key)[0][0]


def history(result) -> list[dict[str, Any]]:
    """Every epoch's metrics, read from the latest checkpoint (Ray keeps only some reported rows)."""
    ck = result.checkpoint
    if ck is None:
        return []
    with ck.as_directory() as d:
        return json.loads((Path(d) / "loop_state.json").read_text()).get("history", [])


def clear_checkpoints(storage: Storage, parent: Path, name: str) -> None:
    storage.delete(parent / name)
