"""The `tune` stage: an ASHA sweep over the teacher's or the student's hyperparameters.

Each trial is a Train driver (the Tune trainable) that runs a TorchTrainer with `TuneReportCallback`, so ASHA
sees every epoch's rank-0 metrics. Resources: the trial itself reserves `tune.trial_cpus` (a fraction), its
Train workers reserve `tune.num_workers x train.cpus_per_worker` in their own placement group, and
`max_concurrent_trials` bounds how many run at once: on 2 CPUs nothing waits on a CPU that never frees.
Results: TensorBoard event files per trial under tune/sweep/, W&B (offline) when enabled, a summary table
and plot, and the best configuration written back as a complete YAML that `ray-pipeline train` accepts.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Optional

import yaml

from .. import atomic
from ..config import Config, validate
from ..data import dataset as ds_lib
from ..paths import RunPaths
from ..storage import Storage
from ..pipeline import StageContext, StageResult

log = logging.getLogger(__name__)


def search_space(cfg: Config) -> dict[str, Any]:
    from ray import tune

    space = {}
    for key, dim in cfg.tune.space.items():
        if dim.kind == "loguniform":
            space[key] = tune.loguniform(dim.low, dim.high)
        elif dim.kind == "uniform":
            space[key] = tune.uniform(dim.low, dim.high)
        elif dim.kind == "randint":
            space[key] = tune.randint(int(dim.low), int(dim.high))
        else:
            space[key] = tune.choice(list(dim.values))
    return space


def apply_params(section: dict[str, Any], params: dict[str, Any], where: str) -> dict[str, Any]:
    """Set dotted keys (e.g. "optim.lr") inside a model section; unknown keys are errors."""
    out = copy.deepcopy(section)
    for key, value in params.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise KeyError(f"tune.space.{key}: {where} has no section {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"tune.space.{key}: {where} has no key {parts[-1]!r}")
        node[parts[-1]] = value
    return out


def _trial(params: dict[str, Any], cfg_json: str, data_hash: str, datasets: dict[str, Any], norm: dict[str, Any],
           run_dir: str, storage: Storage, teachers: Optional[dict[str, dict[str, str]]] = None) -> None:
    """The Tune trainable: one Train run with the sampled hyperparameters, reporting through Tune. It may run on
    any node: everything it needs comes from the driver (nothing is read from the driver's disk)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..config import Config
    from ..train import driver

    cfg = Config.model_validate_json(cfg_json)
    paths = RunPaths(Path(run_dir))
    kind = cfg.tune.model
    section = apply_params(driver.model_section(cfg, kind), params, f"train.{kind}")
    section["optim"]["epochs"] = cfg.tune.max_t
    spec = driver.model_spec(cfg, kind, section, norm, train_key=driver.train_key(cfg, kind, section, data_hash),
                             dataset_hash=data_hash)
    trial_id = ray.tune.get_context().get_trial_id()
    loop_cfg = driver.loop_config(cfg, paths, kind, section, spec, paths.tune / "train" / f"trial-{trial_id}",
                                  teachers)
    loop_cfg = loop_cfg.model_copy(update={"run_name": f"{cfg.run.name}-tune-{trial_id}"})
    trainer = driver.make_trainer(cfg, loop_cfg, datasets, storage, paths.tune / "train", name=f"trial-{trial_id}",
                                  num_workers=cfg.tune.num_workers, callbacks=[TuneReportCallback()])
    trainer.fit()


def run(ctx: StageContext) -> StageResult:
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    cfg, paths = ctx.cfg, ctx.paths
    t = cfg.tune
    kind = t.model
    from ..train import driver

    section = driver.model_section(cfg, kind)
    for key in t.space:  # fail before any trial starts
        apply_params(section, {key: None}, f"train.{kind}")
    if not t.space:
        raise ValueError("tune.space: empty; give at least one hyperparameter to search")
    storage = ctx.storage
    # a student sweep needs its trained teachers (fails here, naming the file, before any trial)
    teachers = driver.teacher_files(cfg, paths, section["distill"]["teachers"]) \
        if section.get("distill", {}).get("teachers") else None
    data_hash = ctx.manifest.output_hash("generate")
    callbacks = []
    from ..runtime import wandb_mode

    if wandb_mode(cfg) != "disabled" and _wandb_enabled():
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=cfg.tracking.wandb_project, group=f"{cfg.run.name}-tune",
                                             log_config=True, dir=str(paths.wandb)))
    sweep_dir = storage.uri_of(paths.tune / "sweep")
    if ctx.force:
        storage.delete(paths.tune / "sweep")
    # train/val materialised once by the driver for every trial: a trial then starts no Ray Data task that could
    # wait on a CPU held by another trial's workers (and nothing is re-read or re-padded per trial)
    manifest = ds_lib.read_manifest(paths.dataset)
    datasets = driver.training_datasets(cfg, paths, storage, kind, manifest)
    trainable = ray.tune.with_parameters(_trial, cfg_json=cfg.model_dump_json(), data_hash=data_hash,
                                         datasets=datasets, norm=manifest["norm"]["input"], run_dir=str(paths.run),
                                         storage=storage, teachers=teachers)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, {"cpu": t.trial_cpus}),
        param_space=search_space(cfg),
        tune_config=ray.tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent_trials,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=t.max_t, grace_period=t.grace_period,
                                    reduction_factor=t.reduction_factor)),
        run_config=ray.tune.RunConfig(name="sweep", **storage.run_config(paths.tune), callbacks=callbacks,
                                      failure_config=ray.tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"trial_id": m.get("trial_id"), **{f"param.{k}": v for k, v in (r.config or {}).items()},
                     "iterations": m.get("training_iteration"), t.metric: m.get(t.metric),
                     "val_loss": m.get("val_loss"), "error": str(r.error)[:300] if r.error else None,
                     "curve": _curve(r, t.metric)})
    ok = [row for row in rows if row[t.metric] is not None]
    if not ok:
        raise RuntimeError(f"tune: no trial reported {t.metric}; errors: {[r['error'] for r in rows]}")
    best = results.get_best_result(metric=t.metric, mode=t.mode, scope="all")
    best_params = dict(best.config)
    best_cfg = best_config_dict(cfg, kind, best_params)
    validate(best_cfg, "tune best config")  # what we write must load
    paths.tune.mkdir(parents=True, exist_ok=True)
    best_yaml = paths.tune / "best.yaml"
    atomic.write_text(best_yaml, "# Best configuration of the sweep (ray-pipeline tune); usable by "
                                 "`ray-pipeline train`.\n" + yaml.safe_dump(best_cfg, sort_keys=False))
    summary = {"model": kind, "metric": t.metric, "mode": t.mode, "best_params": best_params,
               "best_value": best.metrics.get(t.metric), "trials": rows, "best_config": str(best_yaml),
               "tensorboard_logdir": str(sweep_dir)}
    atomic.write_json(paths.tune / "summary.json", summary)
    _write_summary_md(paths, summary)
    log.info("tune: best %s=%.4f with %s; config %s", t.metric, summary["best_value"], best_params, best_yaml)
    return StageResult(outputs={k: v for k, v in summary.items() if k != "trials"} | {"n_trials": len(rows)},
                       output_hash=output_hash(paths))


def output_hash(paths: RunPaths) -> str:
    return atomic.hash_tree(paths.tune / "best.yaml")


def best_config_dict(cfg: Config, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    d = cfg.to_dict()
    d["train"][kind] = apply_params(d["train"][kind], params, f"train.{kind}")
    d["tune"]["enabled"] = False
    d["stages"] = [s for s in d["stages"] if s != "tune"] or ["generate", "train"]
    if "train" not in d["stages"]:
        d["stages"] = [s for s in ("generate", "train", "evaluate", "export", "report") if s in d["stages"] or
                       s in ("generate", "train")]
    return d


def _curve(result, metric: str) -> list[float]:
    df = result.metrics_dataframe
    if df is None or metric not in getattr(df, "columns", []):
        return []
    return [float(v) for v in df[metric].tolist()]


def _wandb_enabled() -> bool:
    try:
        from ray.air.integrations import wandb as w

        return w.wandb is not None
    except Exception:
        return False


def _write_summary_md(paths: RunPaths, s: dict[str, Any]) -> None:
    from ..plots import pyplot, save

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for row in s["trials"]:
        if row["curve"]:
            ax.plot(range(1, len(row["curve"]) + 1), row["curve"], marker="o", ms=3, label=row["trial_id"])
    ax.set_xlabel("epoch (training_iteration)")
    ax.set_ylabel(s["metric"])
    ax.set_title("ASHA sweep")
    ax.legend(fontsize=6)
    fig.tight_layout()
    save(fig, paths.tune / "sweep.png")
    params = sorted({k for r in s["trials"] for k in r if k.startswith("param.")})
    lines = [f"# Sweep of the {s['model']} ({s['metric']}, {s['mode']})", "",
             "| trial | " + " | ".join(p[6:] for p in params) + f" | epochs | {s['metric']} |",
             "|---" * (len(params) + 3) + "|"]
    for r in sorted(s["trials"], key=lambda r: -(r[s["metric"]] or -1e9) if s["mode"] == "max" else (r[s["metric"]] or 1e9)):
        vals = " | ".join(f"{r.get(p):.4g}" if isinstance(r.get(p), float) else str(r.get(p)) for p in params)
        v = r[s["metric"]]
        lines.append(f"| {r['trial_id']} | {vals} | {r['iterations']} | {v:.4f} |" if v is not None else
                     f"| {r['trial_id']} | {vals} | {r['iterations']} | failed |")
    lines += ["", f"Best: {json.dumps(s['best_params'])} -> {s['best_value']:.4f}; config `{s['best_config']}`", "",
              f"TensorBoard: `tensorboard --logdir {s['tensorboard_logdir']}`", "", "![sweep](sweep.png)", ""]
    atomic.write_text(paths.tune / "summary.md", "\n".join(lines))



