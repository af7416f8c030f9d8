"""The `train` stage: teacher -> distilled student (its workers score their shards with the teacher), and the
cost predictor.

Each model is trained by a TorchTrainer whose run name is `<kind>-<train key>` under `checkpoints/`:
re-running after a crash or a kill resumes from the latest checkpoint; a model whose finished directory
already carries the same key is not trained again. Final models go to `models/<kind>/` (atomically).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .. import atomic
from ..console import progress
from ..config import Config
from ..data import dataset as ds_lib
from ..kinds import ALL_KINDS, deployed, kind_of, scorers, top1_ratio_key
from ..models import io as model_io
from ..models.nets import n_params
from ..paths import RunPaths
from ..storage import Storage
from ..pipeline import StageContext, StageResult
from . import driver, tracking
from . import progress as train_progress

log = logging.getLogger(__name__)
# test instances of a graph kind's families whose learned searches check its native file against PyTorch
NATIVE_CHECK_INSTANCES = 8


def run(ctx: StageContext) -> StageResult:
    cfg, paths = ctx.cfg, ctx.paths
    manifest = ds_lib.read_manifest(paths.dataset)
    if manifest["counts"]["states"]["train"] == 0:
        raise ds_lib.DatasetError(f"{paths.dataset}: no training states; generate more data (data.generate)")
    data_hash = ctx.manifest.output_hash("generate")
    outputs: dict[str, Any] = {}
    datasets: dict[str, Any] = {}  # materialised once: the student trains on the teacher's train/val datasets
    for kind in cfg.train.models:  # the console line counts the epochs of the model in training
        outputs[kind] = train_model(cfg, paths, ctx.storage, kind, manifest, data_hash, force=ctx.force,
                                    datasets_cache=datasets)
    progress("train", len(cfg.train.models), len(cfg.train.models), "models")
    scorers = [k for k in cfg.train.models if kind_of(k).scorer]
    test = evaluate_on_test(paths, manifest, cfg.train.families, scorers, cfg) if scorers else {}
    outputs["test"] = test
    for kind, m in test.items():
        log.info("train: test top-1 %s %.3f (dom/wdeg %.3f)", kind, m["top1"], m["baseline_top1"])
    d = deployed()
    if d.name in test and d.compare_to in test:
        t1, s1 = test[d.compare_to]["top1"], test[d.name]["top1"]
        outputs[top1_ratio_key()] = round(s1 / t1, 4) if t1 else None
    atomic.write_json(paths.models / "train_summary.json", outputs)
    return StageResult(outputs=outputs, output_hash=output_hash(paths))


def output_hash(paths: RunPaths) -> str:
    """Over the models present: one that disappears (or changes) no longer matches the recorded hash."""
    return atomic.hash_files({k: paths.model(k) / "model.pt" for k in ALL_KINDS})


def train_model(cfg: Config, paths: RunPaths, storage: Storage, kind: str, manifest: dict[str, Any],
                data_hash: str, force: bool = False, section: dict[str, Any] | None = None,
                datasets_cache: dict[str, Any] | None = None) -> dict[str, Any]:
    section = section or driver.model_section(cfg, kind)
    key = driver.train_key(cfg, kind, section, data_hash)
    final = paths.model(kind)
    if not force and (final / "model.json").exists():
        try:
            spec = json.loads((final / "model.json").read_text())
            if spec.get("train_key") == key:
                log.info("train %s: finished model with key %s exists, skipped", kind, key)
                return spec["summary"]
        except (OSError, json.JSONDecodeError):
            pass
    norm = manifest["norm"][kind_of(kind).norm_key]
    spec = driver.model_spec(cfg, kind, section, norm, train_key=key, dataset_hash=data_hash)
    name = f"{kind}-{key}"
    if force:
        driver.clear_checkpoints(storage, paths.checkpoints, name)
    epochs = section["optim"]["epochs"]
    progress("train", 0, epochs, "epochs", label=kind)
    teachers = section.get("distill", {}).get("teachers")
    # every row scorer reads the same states; a graph scorer, those states with their graphs
    inputs = kind if not kind_of(kind).scorer or kind_of(kind).graph else "scorer"
    if datasets_cache is not None and inputs in datasets_cache:
        datasets = datasets_cache[inputs]
    else:
        datasets = driver.training_datasets(cfg, paths, storage, kind, manifest)
        if datasets_cache is not None:
            datasets_cache[inputs] = datasets
    loop_cfg = driver.loop_config(cfg, paths, kind, section, spec, paths.checkpoints / name,
                                  driver.teacher_files(cfg, paths, teachers) if teachers else None)
    log.info("train %s: %d workers, run %s", kind, cfg.train.num_workers, storage.uri_of(paths.checkpoints / name))
    with train_progress.follow(paths.train_progress(kind),
                               lambda r: progress("train", int(r["epoch"]), epochs, "epochs", label=kind)) as pfile:
        relay = train_progress.EpochRelay(str(pfile))
        result = driver.make_trainer(cfg, loop_cfg, datasets, storage, paths.checkpoints, name,
                                     callbacks=[relay]).fit()
    if result.error is not None:
        raise result.error
    score, mode = driver.score_of(cfg, kind)
    best = driver.best_checkpoint(result, score, mode)
    if best is None:
        raise RuntimeError(f"train {kind}: the run reported no checkpoint ({storage.uri_of(paths.checkpoints / name)})")
    hist = driver.history(result)
    with best.as_directory() as d:
        model, ck_spec = model_io.load(Path(d), expect={"train_key": key})
    best_metrics = dict(max(hist, key=lambda r: r.get(score, -1e9) * (1 if mode == "max" else -1))) if hist else {}
    summary = {"kind": kind, "train_key": key, "params": n_params(model), "epochs_run": len(hist),
               "best": {k: v for k, v in best_metrics.items() if isinstance(v, (int, float))},
               "checkpoints": storage.uri_of(paths.checkpoints / name)}
    with atomic.directory(final) as tmp:
        if kind_of(kind).graph:  # the core's own evaluation of it, checked against PyTorch on live search states
            summary["native"] = _write_native_graph(cfg, paths, kind, model, ck_spec, manifest, tmp)
        ck_spec["summary"] = summary
        model_io.save(model, ck_spec, tmp)
        atomic.write_json(tmp / "metrics.json", {"summary": summary, "history": hist})
        tracking.write_csv(tmp / "metrics.csv", hist)
        tracking.plot_curves(tmp / "curves.png", hist, kind)
    if cfg.tracking.tensorboard:
        tracking.write_tensorboard(paths.tensorboard / kind, hist)
    log.info("train %s: %d params, best %s", kind, summary["params"],
             {k: round(v, 4) for k, v in summary["best"].items() if k.startswith("val_")})
    return summary


def _write_native_graph(cfg: Config, paths: RunPaths, kind: str, model, spec: dict[str, Any],
                        manifest: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """model.native.npz of a graph kind, checked on learned searches of the first test instances of its families.
    It carries the setting the benchmarks run it with (evaluate.learned, as the student's files; its families)."""
    from .. import learned_setting
    from ..data import steps
    from ..models import native_graph

    families = cfg.train.families_of(kind)
    instances, _ = driver.graph_inputs(paths.dataset, families, "test")
    first = sorted(instances)[:NATIVE_CHECK_INSTANCES]
    setting = learned_setting.of(cfg.evaluate, families)
    return native_graph.write(model, spec, out_dir, [steps.loads(instances[i], i) for i in first], manifest["top_k"],
                              meta={learned_setting.KEY: setting.to_text()})


def evaluate_on_test(paths: RunPaths, manifest: dict[str, Any], families: list[str] | None,
                     kinds: tuple[str, ...] | list[str] | None = None, cfg: Config | None = None) -> dict[str, Any]:
    """Ranking metrics of the scorers (`kinds`, default the pipeline's) on the test split, on the families they
    were trained for (local: the split is small). Graph kinds (their families: cfg.train.graph) need `cfg`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import torch

    from .metrics import finish_ranking, ranking_sums

    full = ds_lib.read_states(paths.dataset, "test")
    out = {}
    for kind in kinds if kinds is not None else [k.name for k in scorers()]:
        kd = kind_of(kind)
        if kd.graph and cfg is None:
            raise ValueError(f"evaluate_on_test: the {kind} kind reads train.{kind} and data.trace: pass cfg")
        fams = cfg.train.families_of(kind) if kd.graph else families
        expect = None
        if kd.graph:
            from ..graph import GRAPH_VERSION

            instances, n_max = driver.graph_inputs(paths.dataset, fams, "test")
            a = driver.graph_batch(full, manifest["top_k"], n_max, "best", cfg.train.target_temperature, fams,
                                   instances, cfg.data.trace)
            expect = {"graph_version": GRAPH_VERSION}
        else:
            a = ds_lib.to_arrays(full.filter(pc.is_in(full["family"], value_set=pa.array(fams))) if fams else full,
                                 manifest["top_k"])
        model, _ = model_io.load(paths.model(kind), expect=expect)
        cols = {k: torch.from_numpy(v) for k, v in a.items() if v.dtype != object}
        step = 256 if kd.graph else max(1, len(a["x"]))  # a dense graph batch holds [B, N, N, hidden] messages
        with torch.inference_mode():
            s = torch.cat([kd.batch_scores(model, {k: v[i:i + step] for k, v in cols.items()})
                           for i in range(0, len(a["x"]), step)]) if len(a["x"]) else torch.zeros(0, a["x"].shape[1])
        out[kind] = finish_ranking(ranking_sums(s, torch.from_numpy(a["mask"]), torch.from_numpy(a["target"]),
                                                torch.from_numpy(a["costs"])))
        out[kind]["n"] = int(len(a["x"]))
        out[kind]["families"] = fams or "all"
    return out
