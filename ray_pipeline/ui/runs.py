"""Control Center data: what the pipeline wrote about each run, read back as plain dicts. Pure and read-only.

Sources, all written by the pipeline: `<root>/registry.sqlite` (exported models, finished runs), each run's
`manifest.json` (config, stage status and times), `models/<name>/model.json`, `models/train_summary.json`,
`models/export_summary.json`, `evaluation/evaluation.json` and `reports/metrics.json`. A run directory with a
manifest but no registry row yet (still running, or failed before the report) is listed too. A missing or
damaged file leaves its fields empty and adds a note; it never stops the page.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Optional

from ..config import STAGES
from ..kinds import ALL_KINDS, OPTIONAL_KINDS, scorers
from ..paths import NATIVE_FILE, RunPaths, registry_path

# the pipeline's kinds, then the optional ones a run may have trained (the graph scorer): listed when on disk
MODEL_KINDS = tuple(ALL_KINDS)


def _json(path: Path, notes: list[str]) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path}: unreadable ({type(e).__name__})")
        return None
    return data if isinstance(data, dict) else None


def registry_rows(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]], list[str]]:
    """(runs by name, models by run and name, notes) from the registry; empty if there is none yet."""
    path = registry_path(root)
    runs: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, dict[str, Any]]] = {}
    if not path.is_file():
        return runs, models, []
    try:  # read-only: the UI must never create or lock the pipeline's registry
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            for r in db.execute("SELECT * FROM runs"):
                runs[r["run"]] = dict(r)
            for r in db.execute("SELECT * FROM models"):
                models.setdefault(r["run"], {})[r["name"]] = dict(r)
    except sqlite3.Error as e:
        return runs, models, [f"{path}: {e}"]
    return runs, models, []


def run_names(root: Path) -> list[str]:
    runs, _, _ = registry_rows(root)
    names = set(runs)
    if root.is_dir():
        names |= {d.name for d in root.iterdir() if (d / "manifest.json").is_file()}
    return sorted(names)


def run_status(stages: dict[str, Any]) -> str:
    statuses = [s.get("status") for s in stages.values()]
    if "running" in statuses:
        return "running"
    if "failed" in statuses:
        return "failed"
    return "done" if statuses else "empty"


def _variant(variants: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((v for v in variants if v.get("variant") == name), {})


def run_info(root: Path, name: str) -> dict[str, Any]:
    """Everything the Control Center shows about one run."""
    notes: list[str] = []
    paths = RunPaths.of(root, name)
    reg_runs, reg_models, reg_notes = registry_rows(root)
    notes += reg_notes
    manifest = _json(paths.manifest, notes) or {}
    stages_raw = manifest.get("stages") if isinstance(manifest.get("stages"), dict) else {}
    order = [s for s in STAGES if s in stages_raw] + [s for s in stages_raw if s not in STAGES]
    stages = [{"name": s, "status": stages_raw[s].get("status"), "seconds": stages_raw[s].get("seconds"),
               "started": stages_raw[s].get("started"), "finished": stages_raw[s].get("finished"),
               "error": stages_raw[s].get("error")} for s in order]
    train_summary = _json(paths.models / "train_summary.json", notes) or {}
    export = _json(paths.models / "export_summary.json", notes) or {}
    evaluation = _json(paths.evaluation / "evaluation.json", notes) or {}
    metrics = _json(paths.reports / "metrics.json", notes) or {}
    speedup = (evaluation.get("speedup") or {}).get("summary") or {}
    models = []
    for kind in MODEL_KINDS:
        mdir = paths.model(kind)
        spec = _json(mdir / "model.json", notes)
        if spec is None:
            continue
        reg = reg_models.get(name, {}).get(kind, {})
        exp = export.get(kind) or {}
        variants = exp.get("variants") or []
        fp32, int8 = _variant(variants, "onnx-fp32"), _variant(variants, exp.get("int8_choice") or "onnx-int8")
        test = (train_summary.get("test") or {}).get(kind) or {}
        deploy = exp.get("deploy") or reg.get("deploy")
        if deploy is None and kind in OPTIONAL_KINDS and (mdir / NATIVE_FILE).is_file():
            deploy = NATIVE_FILE  # not exported: the train stage writes the file the core runs
        models.append({
            "name": kind, "kind": spec.get("kind"), "params": exp.get("params") or reg.get("params")
            or (train_summary.get(kind) or {}).get("params"),
            "hparams": spec.get("hparams"), "feature_version": spec.get("feature_version"),
            "dataset_hash": spec.get("dataset_hash"), "train_key": spec.get("train_key"),
            "top1": test.get("top1"), "test": test, "deploy": deploy,
            "fp32_bytes": reg.get("onnx_bytes") or _size(mdir / "model.onnx"),
            "int8_bytes": reg.get("int8_bytes") or _size(mdir / "model.int8.onnx"),
            "fp32_latency_us": fp32.get("latency_single_us"), "int8_latency_us": int8.get("latency_single_us"),
            "int8_variant": int8.get("variant"), "variants": variants,
            "card": (mdir / "card.md").is_file(), "curves": (mdir / "curves.png").is_file(),
            "in_registry": bool(reg), "dir": str(mdir),
        })
    ratios = []
    for split, per_h in speedup.items():
        learned = (per_h or {}).get("learned")
        if learned:
            ratios.append({"split": split, "instances": learned.get("compared", learned.get("instances")),
                           "node_ratio": learned.get("geomean_node_ratio"),
                           "node_ci": learned.get("geomean_node_ratio_ci95"),
                           "time_ratio": learned.get("geomean_time_ratio"),
                           "time_ci": learned.get("geomean_time_ratio_ci95"),
                           "model_calls": learned.get("model_calls")})
    # which model the evaluate stage ran as the learned heuristic (evaluate.learned.model: the deployed student,
    # or an optional scorer such as the graph scorer): the ratios above are that model's
    ran = (evaluation.get("speedup") or {}).get("learned", {}).get("model")
    learned_model = f"{Path(ran).parent.name}/{Path(ran).name}" if ran else None
    reports = sorted(p.name for p in paths.reports.glob("*")) if paths.reports.is_dir() else []
    plots = [f"reports/{p}" for p in reports if p.endswith(".png")]
    if paths.evaluation.is_dir():
        plots += [f"evaluation/{p.name}" for p in sorted(paths.evaluation.glob("*.png")) if p.name not in reports]
    return {
        "name": name, "dir": str(paths.run), "exists": paths.run.is_dir(), "status": run_status(stages_raw),
        "created": manifest.get("created"), "updated": manifest.get("updated"),
        "git_commit": manifest.get("git_commit"), "config_hash": manifest.get("config_hash"),
        "config": manifest.get("config") or {}, "stages": stages, "models": models, "ratios": ratios,
        "learned_model": learned_model,
        "registered": name in reg_runs, "report": "reports/report.md" if (paths.reports / "report.md").is_file() else None,
        "plots": plots, "tensorboard": str(paths.tensorboard) if paths.tensorboard.is_dir() else None,
        "metrics": metrics, "notes": notes,
    }


def _size(path: Path) -> Optional[int]:
    return path.stat().st_size if path.is_file() else None


def explorable_models(root: Path) -> list[tuple[str, str]]:
    """(run, model) pairs the explorer can load: a scorer with an exported ONNX file (the deployed one first)."""
    out = []
    for run in run_names(root):
        for kind in [k.name for k in sorted(scorers(), key=lambda k: not k.deployed)]:
            d = RunPaths.of(root, run).model(kind)
            if (d / "model.json").is_file() and (d / "model.onnx").is_file():
                out.append((run, kind))
    return out
