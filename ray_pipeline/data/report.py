"""The dataset quality report: Markdown + JSON + PNG histograms, written next to the dataset."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..features import INPUT_FEATURES
from .dataset import Assembled, flat_features


def summarize(a: Assembled, wall_s: float) -> dict[str, Any]:
    states = a.states
    all_rows = [r for t in states.values() for r in t.select(["family", "size", "split", "best", "n_best",
                                                                 "n_cands", "censored"]).to_pylist()]
    inst = a.instances.select(["family", "size", "split", "status", "limit", "aug"]).to_pylist()
    t = a.timings.to_pydict()
    per_group: dict[str, dict[str, int]] = {}
    for r in all_rows:
        g = per_group.setdefault(f"{r['family']}/{r['size']}", Counter())
        g[r["split"]] += 1
    inst_group: dict[str, dict[str, int]] = {}
    for r in inst:
        g = inst_group.setdefault(f"{r['family']}/{r['size']}", Counter())
        g[r["status"]] += 1
    n_probes = sum(len(r["censored"]) for r in all_rows)
    n_cens = sum(sum(r["censored"]) for r in all_rows)
    labelled = len(all_rows) + a.purify.get("uninformative_dropped", 0) + a.purify.get("duplicates_dropped", 0) \
        + a.purify.get("balance_dropped", 0)
    x = flat_features(states["train"])
    feat_stats = {name: {"mean": float(x[:, j].mean()), "std": float(x[:, j].std()), "min": float(x[:, j].min()),
                         "max": float(x[:, j].max())} if len(x) else {} for j, name in enumerate(INPUT_FEATURES)}
    n_specs = a.manifest["counts"]["specs"]
    return {
        "states_per_split": {sp: tb.num_rows for sp, tb in states.items()},
        "states_per_family_size": {k: dict(v) for k, v in sorted(per_group.items())},
        "instances_per_family_size_status": {k: dict(v) for k, v in sorted(inst_group.items())},
        "instances": {"specs": n_specs, "built": a.instances.num_rows, "errors": a.errors.num_rows,
                      "valid_pct": round(100.0 * a.instances.num_rows / n_specs, 2) if n_specs else 0.0,
                      "trace_limit_hits": dict(Counter(r["limit"] for r in inst if r["limit"]))},
        "states": {"labelled": labelled, "kept": len(all_rows),
                   "kept_pct": round(100.0 * len(all_rows) / labelled, 2) if labelled else 0.0, **a.purify},
        "labels": {"best_index": dict(sorted(Counter(r["best"] for r in all_rows).items())),
                   "dom_wdeg_choice_is_best_pct": round(100.0 * np.mean([r["best"] == 0 for r in all_rows]), 2)
                   if all_rows else None,
                   "mean_ties_at_best": round(float(np.mean([r["n_best"] for r in all_rows])), 3) if all_rows else None,
                   "mean_candidates": round(float(np.mean([r["n_cands"] for r in all_rows])), 3) if all_rows else None,
                   "censored_probe_pct": round(100.0 * n_cens / n_probes, 2) if n_probes else 0.0},
        "expansion_factor": a.manifest["expansion_factor"],
        "time_s": {"wall": round(wall_s, 2), "generate_cpu": round(sum(t.get("generate_s", [])), 2),
                   "trace_cpu": round(sum(t.get("trace_s", [])), 2), "label_cpu": round(sum(t.get("label_s", [])), 2),
                   "probes": int(sum(t.get("probes", []))), "probe_nodes": int(sum(t.get("probe_nodes", [])))},
        "nodes_used": sorted(set(t.get("node_id", []))),
        "feature_stats_train": feat_stats,
    }


def write(a: Assembled, out: Path, wall_s: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(a, wall_s)
    atomic.write_json(out / "report.json", s)
    _plots(a, out)
    lines = ["# Dataset report", "",
             f"Instances: {s['instances']['built']} built of {s['instances']['specs']} "
             f"({s['instances']['valid_pct']}% valid, {s['instances']['errors']} quarantined in errors.parquet). "
             f"Expansion factor from augmentation: {s['expansion_factor']}.", "",
             f"States: {s['states']['kept']} kept of {s['states']['labelled']} labelled ({s['states']['kept_pct']}%): "
             f"{s['states']['uninformative_dropped']} uninformative, {s['states']['duplicates_dropped']} duplicates, "
             f"{s['states']['balance_dropped']} over the balance cap.", "",
             "| split | states |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["states_per_split"].items()]
    lines += ["", "| family/size | train | val | test | heldout |", "|---|---|---|---|---|"]
    for g, c in s["states_per_family_size"].items():
        lines.append(f"| {g} | {c.get('train', 0)} | {c.get('val', 0)} | {c.get('test', 0)} | {c.get('heldout', 0)} |")
    lines += ["", "| family/size | SAT | UNSAT | UNKNOWN (limit) |", "|---|---|---|---|"]
    for g, c in s["instances_per_family_size_status"].items():
        lines.append(f"| {g} | {c.get('SAT', 0)} | {c.get('UNSAT', 0)} | {c.get('UNKNOWN', 0)} |")
    lb = s["labels"]
    lines += ["", "## Labels", "",
              f"- best candidate index (0 = dom/wdeg's choice): {lb['best_index']}",
              f"- dom/wdeg's choice is the cheapest probe in {lb['dom_wdeg_choice_is_best_pct']}% of states",
              f"- mean candidates {lb['mean_candidates']}, mean ties at the best cost {lb['mean_ties_at_best']}",
              f"- probes over the node budget (censored): {lb['censored_probe_pct']}%", "",
              "## Time", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["time_s"].items()]
    lines += ["", f"Ray nodes that ran tasks: {len(s['nodes_used'])}", "",
              "![counts](counts.png)", "![labels](labels.png)", "![features](features.png)", ""]
    atomic.write_text(out / "report.md", "\n".join(lines))
    return s


def _plots(a: Assembled, out: Path) -> None:
    from ..plots import pyplot, save

    plt = pyplot()

    rows = [r for t in a.states.values() for r in t.select(["family", "size", "split", "best", "costs"]).to_pylist()]
    groups = Counter(f"{r['family']}/{r['size']}" for r in rows)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(list(groups), list(groups.values()), color="#4c72b0")
    ax.set_ylabel("states")
    ax.set_title("labelled states per family/size")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    save(fig, out / "counts.png", dpi=90)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    best = Counter(r["best"] for r in rows)
    axes[0].bar(list(best), list(best.values()), color="#55a868")
    axes[0].set_xlabel("index of the cheapest candidate (0 = dom/wdeg)")
    axes[0].set_ylabel("states")
    costs = np.concatenate([np.asarray(r["costs"]) for r in rows]) if rows else np.zeros(1)
    axes[1].hist(np.log10(np.maximum(costs, 1)), bins=30, color="#c44e52")
    axes[1].set_xlabel("log10 probe cost (nodes)")
    fig.tight_layout()
    save(fig, out / "labels.png", dpi=90)

    x = flat_features(a.states["train"])
    cols = 7
    n_rows = int(np.ceil(len(INPUT_FEATURES) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.2 * cols, 1.8 * n_rows))
    for j, ax in enumerate(axes.flat):
        if j < len(INPUT_FEATURES) and len(x):
            ax.hist(x[:, j], bins=25, color="#8172b2")
            ax.set_title(INPUT_FEATURES[j], fontsize=7)
            ax.tick_params(labelsize=6)
        else:
            ax.axis("off")
    fig.tight_layout()
    save(fig, out / "features.png", dpi=80)
