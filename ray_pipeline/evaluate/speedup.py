"""The solver speedup benchmark: every heuristic on the same instances, as Ray tasks over instances.

One task solves one instance with every heuristic in turn (same process, same conditions); the learned
heuristic calls the exported student through ONNX Runtime, and its wall time includes feature extraction
and every model call. Ratios are against the baseline (dom/wdeg) on instances both solved within the limits.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Optional

import numpy as np


def solve_all(item: dict[str, Any], heuristics: list[str], propagation: str, node_limit: int, time_limit: float,
              model: Optional[dict[str, bytes]], settings: dict[str, dict[str, Any]], repeats: int = 1
              ) -> list[dict[str, Any]]:
    """Runs as a Ray task, on any node. `item` holds the instance as JSON (or a DIMACS file path, for local
    use); `model` is {file name: bytes} of the learned heuristic's model (ONNX, or model.pt + model.json);
    `settings`: heuristic -> its Solver keyword arguments (learned: top_k, max_depth, min_margin; expert: top_k,
    max_depth, probe_budget). Timing: see `solve_rounds`."""
    from ..problems.instance import loads
    from ..problems.readers import read_instance

    inst = loads(item["instance_json"]) if item.get("instance_json") else read_instance(item["path"])
    scorer = None
    if "learned" in heuristics and model:
        from ..inference import load_scorer
        from ..storage import unpacked

        with unpacked(model, "model") as d:
            scorer = load_scorer(d / next(n for n in model if n != "model.json"))
    runs = [(h, h, settings.get(h, {})) for h in heuristics if h != "learned" or scorer is not None]
    meta = {k: item[k] for k in ("split", "family", "size")}
    return solve_rounds(inst, item["name"], meta, runs, propagation, node_limit, time_limit, scorer, repeats)


def solve_rounds(inst, name: str, meta: dict[str, Any], runs: list[tuple[str, str, dict[str, Any]]],
                 propagation: str, node_limit: int, time_limit: float, scorer, repeats: int) -> list[dict[str, Any]]:
    """One row per run (label, heuristic, its Solver keyword arguments), timed over interleaved rounds (the
    evaluate stage's task and `bench learned` share it). Wall time is the minimum over `repeats` rounds
    (r1, r2, ..., r1, r2, ...): searches are deterministic, so only the clock varies between rounds, and the
    minimum is the least disturbed run. A run that hit a limit is not repeated (its time is the limit)."""
    from ..solver import Solver, compile_instance

    compiled = compile_instance(inst)  # immutable: every run and round shares it
    rows: dict[str, dict[str, Any]] = {}
    for rnd in range(max(1, repeats)):
        for label, h, kwargs in runs:
            # a run that hit a limit is not repeated; nor is the expert (probes: 10-100x a search, timed once)
            if rnd and (rows[label]["status"] == "UNKNOWN" or h == "expert"):
                continue
            r = Solver(inst, heuristic=h, propagation=propagation, node_limit=node_limit, time_limit=time_limit,
                       scorer=scorer if h == "learned" else None, compiled=compiled, seed=0, **kwargs).solve()
            st = r.stats
            if label in rows:
                row = rows[label]
                if st.nodes != row["nodes"] and r.status != "UNKNOWN":
                    raise RuntimeError(f"{name}: {label} is not deterministic ({st.nodes} vs {row['nodes']})")
                if st.time_s < row["time_s"]:
                    row.update(time_s=st.time_s, model_time_s=st.model_time_s, feature_time_s=st.feature_time_s)
                row["runs"] += 1
                continue
            rows[label] = {"instance": name, **meta, "heuristic": label, "status": r.status, "nodes": st.nodes,
                           "backtracks": st.backtracks, "time_s": st.time_s, "model_calls": st.model_calls,
                           "model_time_s": st.model_time_s, "feature_time_s": st.feature_time_s,
                           "probes": st.probes, "probe_nodes": st.probe_nodes, "runs": 1}
    return list(rows.values())


def _geomean(xs: list[float]) -> Optional[float]:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else None


def geomean_ci95(ratios: list[float], resamples: int = 4000) -> Optional[list[float]]:
    """95% bootstrap interval (percentile method, fixed seed) of the geometric-mean ratio, resampling instances.

    Per-instance ratios of tree search spread over an order of magnitude, so a geomean of 0.95 on 16 instances
    says little by itself: the interval says whether "beats dom/wdeg" holds beyond the instance sample."""
    if len(ratios) < 2:
        return None
    logs = np.log(np.asarray(ratios, dtype=np.float64))
    idx = np.random.default_rng(0).integers(0, len(logs), size=(resamples, len(logs)))
    lo, hi = np.percentile(logs[idx].mean(axis=1), [2.5, 97.5])
    return [round(float(np.exp(lo)), 4), round(float(np.exp(hi)), 4)]


def _ratios(pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    node_r = [max(a["nodes"], 1) / max(b["nodes"], 1) for a, b in pairs]
    time_r = [max(a["time_s"], 1e-6) / max(b["time_s"], 1e-6) for a, b in pairs]
    # the same with the heuristic's model calls and feature rows taken out of its time: what a free model would
    # take (the gap to the time ratio is what inference costs; equal to it for heuristics without a model)
    free_r = [max(a["time_s"] - a["model_time_s"] - a["feature_time_s"], 1e-6) / max(b["time_s"], 1e-6)
              for a, b in pairs]
    return {
        "compared": len(pairs),
        "median_node_ratio": round(statistics.median(node_r), 4) if node_r else None,
        "geomean_node_ratio": round(_geomean(node_r), 4) if node_r else None,
        "geomean_node_ratio_ci95": geomean_ci95(node_r),
        "median_time_ratio": round(statistics.median(time_r), 4) if time_r else None,
        "geomean_time_ratio": round(_geomean(time_r), 4) if time_r else None,
        "geomean_time_ratio_ci95": geomean_ci95(time_r),
        "geomean_time_ratio_without_inference": round(_geomean(free_r), 4) if free_r else None,
        "node_wins": sum(a["nodes"] < b["nodes"] for a, b in pairs),
        "node_losses": sum(a["nodes"] > b["nodes"] for a, b in pairs),
        "node_ties": sum(a["nodes"] == b["nodes"] for a, b in pairs),
        "time_wins": sum(a["time_s"] < b["time_s"] for a, b in pairs),
        "time_losses": sum(a["time_s"] > b["time_s"] for a, b in pairs),
    }


def summarize(rows: list[dict[str, Any]], baseline: str) -> dict[str, Any]:
    """Per split and heuristic: solved counts, median/geomean node and time ratios vs the baseline (with 95%
    bootstrap intervals), wins; and the same ratios split by the baseline's answer (SAT / UNSAT), since finding
    a solution early is luck in a way that proving there is none is not."""
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}):
        rs = [r for r in rows if r["split"] == split]
        by = {(r["instance"], r["heuristic"]): r for r in rs}
        insts = sorted({r["instance"] for r in rs})
        out[split] = {"instances": len(insts)}
        for h in sorted({r["heuristic"] for r in rs}):
            solved = sum(1 for i in insts if (i, h) in by and by[(i, h)]["status"] != "UNKNOWN")
            pairs = [(by[(i, h)], by[(i, baseline)]) for i in insts if (i, h) in by and (i, baseline) in by
                     and by[(i, h)]["status"] != "UNKNOWN" and by[(i, baseline)]["status"] != "UNKNOWN"]
            hr = [by[(i, h)] for i in insts if (i, h) in by]
            out[split][h] = {
                "solved": solved, "of": len(hr), **_ratios(pairs),  # the expert runs on fewer instances
                "by_status": {st: _ratios(ps) for st in ("SAT", "UNSAT")
                              if (ps := [(a, b) for a, b in pairs if b["status"] == st])},
                "median_nodes": statistics.median([r["nodes"] for r in hr]) if hr else None,
                "total_time_s": round(sum(r["time_s"] for r in hr), 6),
                "model_calls": int(sum(r["model_calls"] for r in hr)),
                "model_time_s": round(sum(r["model_time_s"] for r in hr), 6),
                "feature_time_s": round(sum(r["feature_time_s"] for r in hr), 6),
            }
    return out


def summarize_groups(rows: list[dict[str, Any]], baseline: str) -> dict[str, Any]:
    """`summarize` within each split per family and per family/size: {split: {"cnf": ..., "cnf/uf50": ...}}.
    A learned heuristic trained on one family is zero-shot on the others, and a split's pooled ratio can hide
    a family where it loses; for external files the size is the file's group (`stage.file_group`)."""
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}):
        rs = [r for r in rows if r["split"] == split]
        regrouped = [dict(r, split=key) for r in rs for key in (r["family"], f"{r['family']}/{r['size']}")]
        out[split] = summarize(regrouped, baseline)
    return out


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], baseline: str, path_prefix) -> list[str]:
    from ..plots import pyplot, save

    plt = pyplot()


    files = []
    splits = sorted(summary)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits):
        by = {(r["instance"], r["heuristic"]): r for r in rows if r["split"] == split}
        for h, color in (("learned", "#c44e52"), ("mrv", "#4c72b0"), ("dom-deg", "#55a868")):
            pts = [(by[(i, baseline)]["nodes"], by[(i, h)]["nodes"]) for (i, hh) in by if hh == h
                   and (i, baseline) in by]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(np.maximum(xs, 1), np.maximum(ys, 1), s=14, alpha=0.7, label=h, color=color)
        lim = max([r["nodes"] for r in rows if r["split"] == split] + [10])
        ax.plot([1, lim], [1, lim], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"nodes, {baseline}")
        ax.set_ylabel("nodes, other heuristic")
        ax.set_title(split)
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = f"{path_prefix}_nodes.png"
    save(fig, p)
    files.append(p)

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    hs = sorted({h for s in summary.values() for h in s if h != "instances"})
    width = 0.8 / max(1, 2 * len(splits))
    for j, split in enumerate(splits):
        for k, key in enumerate(("geomean_node_ratio", "geomean_time_ratio")):
            vals = [summary[split].get(h, {}).get(key) or np.nan for h in hs]
            ax.bar(np.arange(len(hs)) + (2 * j + k) * width, vals, width, label=f"{split} {key.split('_')[1]}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(hs)) + width * (len(splits) - 0.5))
    ax.set_xticklabels(hs)
    ax.set_ylabel(f"geomean ratio vs {baseline}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = f"{path_prefix}_ratios.png"
    save(fig, p)
    files.append(p)
    return files
