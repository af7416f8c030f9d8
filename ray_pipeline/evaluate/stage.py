"""The `evaluate` stage: model checks, ranking metrics, calibration, error analysis, and the solver speedup
benchmark of the exported student against lex / MRV / dom-deg / dom-wdeg (Ray tasks over instances)."""
from __future__ import annotations

import glob
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import atomic
from ..console import progress
from ..data import dataset as ds_lib
from ..kinds import OPTIONAL_KINDS, cost_predictor, deployed, scorers
from ..pipeline import StageContext, StageResult
from . import analysis, fresh, speedup

log = logging.getLogger(__name__)


def _states(paths, split: str, k_max: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    t = ds_lib.read_states(paths.dataset, split)
    meta = t.select(["state_id", "base_id", "family", "size", "depth"]).to_pylist()
    return ds_lib.to_arrays(t, k_max), meta


def _of_families(meta: list[dict[str, Any]], families: Optional[list[str]]) -> np.ndarray:
    """Which states belong to `families` (all of them when None)."""
    return np.array([families is None or m["family"] in families for m in meta], dtype=bool)


def pick_instances(paths, split: str, limit: int) -> list[dict[str, Any]]:
    """Originals only (no augmented copies), round-robin over family/size so every group is represented."""
    t = ds_lib.read_table(paths.dataset, "instances.parquet",
                          columns=["instance_id", "split", "family", "size", "aug", "instance_json"]).to_pylist()
    rows = sorted((r for r in t if r["split"] == split and r["aug"] == 0),
                  key=lambda r: (r["family"], r["size"], r["instance_id"]))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["size"]), []).append(r)
    picked: list[dict[str, Any]] = []
    while len(picked) < limit and any(groups.values()):
        for g in sorted(groups):
            if groups[g] and len(picked) < limit:
                r = groups[g].pop(0)
                picked.append({"name": r["instance_id"], "split": split, "family": r["family"], "size": r["size"],
                               "instance_json": r["instance_json"]})
    return picked


def file_group(path: Path) -> str:
    """The group of an external file, from its name: a SATLIB-style numbered sample `uf50-01.cnf` -> `uf50`
    (its suite); any other name is a group of its own (`queen6_6.col` -> `queen6_6`)."""
    return re.sub(r"-\d+$", "", path.stem)


def anchor_files(files: list[str], base: Path) -> list[str]:
    """evaluate.files made absolute against `base` (the directory the command was started in), `:K` suffixes and
    glob patterns kept. Done when the run starts: inside a Ray Job the working directory can be replaced while the
    driver runs (seen after the train stage: os.getcwd() then fails), so nothing may depend on it later."""
    out = []
    for f in files:
        path, sep, k = f.rpartition(":") if f.rsplit(":", 1)[-1].isdigit() else (f, "", "")
        p = Path(path).expanduser()
        out.append(str(p if p.is_absolute() else base / p) + sep + k)
    return out


def file_items(files: list[str]) -> list[dict[str, Any]]:
    """DIMACS/JSON files read on the driver; the instances travel to the tasks as JSON (any node). A relative
    path is resolved from the working directory (the repository root for `make demo`); a glob pattern
    (`benchmarks/public/sat/*.cnf`) stands for its matches in sorted order, and one matching nothing is an error.
    Each item's `size` is its file group (`file_group`), so the evaluation summarises the external split per
    family (cnf, col) and per group (uf20, uf50, uuf50, ...)."""
    from ..problems.instance import dumps
    from ..problems.readers import read_instance

    items = []
    for i, f in enumerate(files):
        base, _, k = f.rpartition(":") if f.rsplit(":", 1)[-1].isdigit() else (f, "", "")
        base = str(Path(base).expanduser())
        matches = sorted(glob.glob(base)) if glob.has_magic(base) else [base]
        if not matches:
            raise ValueError(f"evaluate.files[{i}]: {f!r} matches no file")
        for m in matches:
            p = Path(m).resolve()
            spec = f"{p}:{k}" if k else str(p)
            try:
                inst = read_instance(spec)  # fail here, naming the key, before any task starts
            except Exception as e:
                raise ValueError(f"evaluate.files[{i}]: {e}") from None
            items.append({"name": p.name + (f":{k}" if k else ""), "split": "external", "family": inst.family,
                          "size": file_group(p), "path": spec, "instance_json": dumps(inst)})
    return items


def learned_model_path(learned, paths, export: dict[str, Any]) -> Path:
    """The file the learned heuristic runs (evaluate.learned.model / runtime; `deployed` = the export stage's
    choice, native MLP, FP32 or INT8): one place, for this stage and `bench learned` / `bench heldout`. An optional
    kind (the graph scorer) has no ONNX export: `deployed` is its native file, written by the train stage once the
    core's scores matched PyTorch's, else its PyTorch file."""
    mdir = paths.model(learned.model)
    if learned.model in OPTIONAL_KINDS and learned.runtime == "deployed":  # (the config refuses its onnx runtimes)
        return mdir / "model.native.npz" if (mdir / "model.native.npz").is_file() else mdir / "model.pt"
    model_file = export[learned.model]["deploy"] if learned.runtime == "deployed" and \
        export.get(learned.model, {}).get("deploy") else \
        {"deployed": "model.onnx", "native": "model.native.npz", "onnx": "model.onnx", "onnx-int8": "model.int8.onnx",
         "torch": "model.pt"}[
            learned.runtime]
    return mdir / model_file


def run(ctx: StageContext) -> StageResult:
    import ray

    from ..models import io as model_io

    cfg, paths = ctx.cfg, ctx.paths
    e = cfg.evaluate
    manifest = ds_lib.read_manifest(paths.dataset)
    k_max = manifest["top_k"]
    out_dir = paths.evaluation
    out_dir.mkdir(parents=True, exist_ok=True)
    files = file_items(list(e.files))
    ev: dict[str, Any] = {"ranking": {}, "checks": {}}

    # ---- model-level evaluation on dataset states
    data = {sp: _states(paths, sp, k_max) for sp in ("val", "test", "heldout")}
    d = deployed().name  # the scorer the solver calls: checked, calibrated and benchmarked below
    loaded = {k.name: model_io.load(paths.model(k.name)) for k in scorers()}
    models = {k: m for k, (m, _) in loaded.items()}
    binary = loaded[d][1].get("scores") == "binary"  # what the deployed scorer's scores mean (calibration)
    scores = {k: {sp: analysis.scores_of(m, data[sp][0]) for sp in data} for k, m in models.items()}
    for k, m in models.items():
        ev["checks"][k] = analysis.checks(m, k, data["test"][0], seed=cfg.run.seed)
        ev["ranking"][k] = {sp: analysis.ranking_by_group(scores[k][sp], data[sp][0],
                                                          [f"{r['family']}/{r['size']}" for r in data[sp][1]])
                            for sp in ("test", "heldout")}
    export = json.loads((paths.models / "export_summary.json").read_text())
    ev["checks"][d].append({"name": "onnx_parity", "passed": export[d]["parity"]["passed"],
                            "detail": f"max |diff| {export[d]['parity']['max_abs_diff']:.2e} on "
                                      f"{export[d]['parity']['rows']} rows"})
    cost_model, _ = model_io.load(paths.model(cost_predictor().name))
    ev["cost"] = _cost_metrics(paths, cost_model)
    # A specialist (train.families) is calibrated where it is meant to act: T is fitted on its families' validation
    # states and ECE measured on their test states; the other families' test states are shown apart, with that T
    own = {sp: _of_families(data[sp][1], cfg.train.families) for sp in ("val", "test")}
    families = list(cfg.train.families) if cfg.train.families else "all"
    if not (own["val"].any() and own["test"].any()):  # a tiny dataset without them: every state, and it says so
        own, families = {sp: np.ones(len(data[sp][1]), dtype=bool) for sp in own}, "all"
    val_scores, val_target = scores[d]["val"][own["val"]], data["val"][0]["target"][own["val"]]
    # rounded as the JSON stores it: T is used as published (bench calibration reads it back)
    t = round(analysis.fit_temperature(val_scores, val_target, binary), 4)
    test_scores, test_target = scores[d]["test"][own["test"]], data["test"][0]["target"][own["test"]]
    bases = {sp: np.array([r["base_id"] for r in data[sp][1]])[own[sp]] for sp in own}
    ev["calibration"] = {"before": analysis.calibration(test_scores, test_target, 1.0, e.ece_bins, binary,
                                                        bases["test"]),
                         "after": analysis.calibration(test_scores, test_target, t, e.ece_bins, binary,
                                                       bases["test"]),
                         "families": families, "val_states": int(own["val"].sum()),
                         "test_states": int(own["test"].sum()),
                         "val_instances": len(set(bases["val"])), "test_instances": len(set(bases["test"])),
                         # where T was fitted; the test figures above show whether it transfers
                         "val_top1_log_loss": {
                             "before": round(analysis.top1_log_loss(val_scores, val_target, 1.0, binary), 4),
                             "after": round(analysis.top1_log_loss(val_scores, val_target, t, binary), 4)},
                         "val_ece": {x: analysis.calibration(val_scores, val_target, tx, e.ece_bins, binary)["ece"]
                                     for x, tx in (("before", 1.0), ("after", t))}}
    if (~own["test"]).any():
        ev["calibration"]["other_families_after"] = analysis.calibration(
            scores[d]["test"][~own["test"]], data["test"][0]["target"][~own["test"]], t, e.ece_bins, binary)
    ev["errors"] = {sp: analysis.error_analysis(scores[d][sp], data[sp][0], data[sp][1])
                    for sp in ("test", "heldout")}

    # ---- speedup: Ray tasks over instances
    model_path = learned_model_path(e.learned, paths, export)
    items = [it for sp in e.splits for it in pick_instances(paths, sp, e.max_instances)] + files
    # one retry: a worker that dies twice on one instance is a crash of the solver, named below, not a hang
    task = ray.remote(num_cpus=1, max_retries=1)(speedup.solve_all)
    heuristics = list(dict.fromkeys([*e.heuristics, e.baseline]))
    model = None
    if "learned" in heuristics:
        from ..inference import load_scorer
        from ..storage import pack

        scorer = load_scorer(model_path)  # a missing or unusable model fails here, naming its file, before any task
        if getattr(scorer, "reads_graph", False):
            _binary_only(items, model_path)
        model = ray.put(pack(model_path.parent, (model_path.name, "model.json")))
    # ---- calibration on fresh instances of the training mix: labelled by Ray tasks beside the speedup tasks
    specs = fresh.fresh_specs(cfg, e.fresh_calibration) if e.fresh_calibration else []
    chunks = fresh.chunked(specs, 16)
    label_task = ray.remote(num_cpus=1, max_retries=1)(fresh.label_fresh)
    fresh_refs = [label_task.remote(c, cfg.data) for c in chunks]
    settings = {"learned": e.learned.solver_kwargs(), "expert": e.expert.solver_kwargs()}
    position, seen = [], Counter()  # an item's place in its split: the expert runs on the first N of each
    for it in items:
        position.append(seen[it["split"]])
        seen[it["split"]] += 1
    refs = [task.remote(it, _item_heuristics(heuristics, pos, e.expert.max_instances), e.propagation,
                        e.node_limit, e.time_limit_s, model, settings, e.repeats) for it, pos in zip(items, position)]
    log.info("evaluate: %d instances x %d heuristics as Ray tasks (learned = %s)", len(items), len(heuristics),
             model_path.name)
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=1)
        progress("evaluate", len(refs) - len(pending), len(refs), "instances")
    rows = [r for it, ref in zip(items, refs) for r in _get(ref, it)]  # in item order, whatever finished first
    summary = speedup.summarize(rows, e.baseline)
    ev["speedup"] = {"baseline": e.baseline, "propagation": e.propagation, "node_limit": e.node_limit,
                     "time_limit_s": e.time_limit_s, "repeats": e.repeats,
                     "learned": {"model": str(model_path), **e.learned.solver_kwargs()},
                     "expert": {**e.expert.solver_kwargs(), "max_instances": e.expert.max_instances}
                     if "expert" in heuristics else None,
                     "summary": summary, "groups": speedup.summarize_groups(rows, e.baseline)}
    expert_on = {(r["split"], r["instance"]) for r in rows if r["heuristic"] == "expert"}
    if expert_on:  # learned and expert side by side on the instances the expert ran on
        ev["speedup"]["expert_subset"] = speedup.summarize(
            [r for r in rows if (r["split"], r["instance"]) in expert_on], e.baseline)
    if fresh_refs:
        states = fresh.in_order([_get_fresh(ref, c) for c, ref in zip(chunks, fresh_refs)])
        if not states:
            raise RuntimeError(f"evaluate.fresh_calibration: no informative state on the {len(specs)} fresh "
                               "instances (data.label decides which states teach something)")
        ev["calibration"]["fresh"] = {"copies": e.fresh_calibration, "instances_built": len(specs),
                                      **fresh.summarize(models[d], states, k_max, t, e.ece_bins, binary)}
    atomic.write_json(out_dir / "speedup_rows.json", rows)
    plots = speedup.plot(rows, summary, e.baseline, out_dir / "speedup")
    plots.append(_reliability_plot(ev["calibration"], out_dir / "reliability.png", d))
    train_counts = Counter(f"{f}/{z}" for f, z in zip(
        ds_lib.read_table(paths.dataset, "states_train.parquet", columns=["family"])["family"].to_pylist(),
        ds_lib.read_table(paths.dataset, "states_train.parquet", columns=["size"])["size"].to_pylist()))
    best_val = json.loads((paths.model(d) / "model.json").read_text()).get("summary", {}).get("best", {})
    ev["suggestions"] = analysis.suggestions(ev, dict(train_counts), best_val.get("val_top1"))
    ev["plots"] = [str(p) for p in plots]
    atomic.write_json(out_dir / "evaluation.json", ev)
    for split, s in summary.items():
        lr = s.get("learned", {})
        log.info("evaluate %s: learned vs %s geomean node ratio %s, time ratio %s, solved %s/%s", split, e.baseline,
                 lr.get("geomean_node_ratio"), lr.get("geomean_time_ratio"), lr.get("solved"), lr.get("of"))
    return StageResult(outputs={"path": str(out_dir / "evaluation.json"), "speedup": summary,
                                "suggestions": ev["suggestions"]},
                       output_hash=output_hash(paths))


def _binary_only(items: list[dict[str, Any]], model_path: Path) -> None:
    """A graph scorer reads binary constraints only (ray_pipeline.graph): any instance with clauses is named here,
    before a task starts, with where it came from (evaluate.files or a split of the dataset)."""
    from ..problems.instance import loads

    bad = [it for it in items if loads(it["instance_json"]).clauses]
    if bad:
        where = ", ".join(f"{it['name']} ({'evaluate.files' if it['split'] == 'external' else it['split'] + ' split'})"
                          for it in bad[:3])
        raise ValueError(f"evaluate.learned.model: {model_path} is a graph scorer, which reads binary constraints "
                         f"only; {len(bad)} instance(s) to evaluate have clauses: {where}"
                         f"{' ...' if len(bad) > 3 else ''} (leave CNF files and k-SAT out of evaluate.files / the "
                         f"generated families, or evaluate another model)")


def _item_heuristics(heuristics: list[str], position: int, expert_max: int) -> list[str]:
    """The expert (probing at every decision near the root) costs 10-100x a search: it runs on the first
    `expert_max` instances of each split only (`position`: the item's place in its split); the summary's `of`
    counts say on how many."""
    if "expert" not in heuristics or position < expert_max:
        return heuristics
    return [h for h in heuristics if h != "expert"]


def output_hash(paths) -> str:
    return atomic.hash_tree(paths.evaluation / "evaluation.json")


def _get(ref, item: dict[str, Any]) -> list[dict[str, Any]]:
    """A task's rows; a worker that died (a crash of the native core kills the process) fails the stage naming
    the instance: an evaluation never drops an instance quietly (that would bias its ratios)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.WorkerCrashedError as e:
        raise RuntimeError(f"evaluate: the worker process died twice solving {item['split']} instance "
                           f"{item['name']!r} (a crash of the native solver core is the likely cause; the instance: "
                           f"{item.get('path') or 'its row in the dataset instances.parquet'}): {e}") from None


def _get_fresh(ref, chunk: list) -> list[dict[str, Any]]:
    """A fresh-calibration task's states; a failure names its instances (family, size, index)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        names = ", ".join(f"{f}-{z}-{i:07d}" for f, z, i, _, _ in chunk[:5])
        raise RuntimeError(f"evaluate.fresh_calibration: labelling fresh instances {names}"
                           f"{' ...' if len(chunk) > 5 else ''} failed: {e}") from None


def _cost_metrics(paths, model) -> dict[str, Any]:
    import torch

    out = {}
    for split in ("test", "heldout"):
        rows = ds_lib.cost_rows(paths.dataset, [split])
        if len(rows["x"]) == 0:
            continue
        with torch.inference_mode():
            pred = model(torch.from_numpy(rows["x"])).numpy()
        out[split] = dict(analysis.regression_report(pred, rows["y"], ("log_nodes", "log_time")), n=len(rows["x"]))
    return out


def _reliability_plot(cal: dict[str, Any], path: Path, model: str) -> Path:
    from ..plots import pyplot, save

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for key, color in (("before", "#c44e52"), ("after", "#4c72b0")):
        rows = [r for r in cal[key]["reliability"] if r["n"]]
        ax.plot([r["conf"] for r in rows], [r["acc"] for r in rows], marker="o", color=color,
                label=f"{key}: T={cal[key]['temperature']}, ECE={cal[key]['ece']:.3f}")
    ax.set_xlabel("confidence (top candidate's " + ("sigmoid)" if cal["after"].get("scores") == "binary"
                                                    else "softmax probability)"))
    ax.set_ylabel("accuracy (chosen candidate is a cheapest one)")
    ax.set_title(f"{model} reliability (test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return path
