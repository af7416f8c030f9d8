"""The `report` stage: one `reports/report.md` for the run, linking every artifact, with plots and
`metrics.json`; the run is recorded in the registry. It summarises whatever stages have finished."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from .. import atomic
from ..kinds import ALL_KINDS, KINDS, OPTIONAL_KINDS, deployed, scorers, top1_ratio_key
from ..pipeline import StageContext, StageResult


def _load(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _model_label(model: str) -> str:
    """models/student/model.onnx -> 'student via ONNX Runtime (model.onnx)'."""
    p = Path(model)
    kd = ALL_KINDS.get(p.parent.name)
    native = "the solver core's graph network" if kd is not None and kd.graph else "the solver core's native MLP"
    runtime = {".pt": "PyTorch", ".npz": native}.get(p.suffix, "ONNX Runtime")
    return f"{p.parent.name} via {runtime} ({p.name})"


def _ratio_cell(r: dict, kind: str) -> str:
    ci = r.get(f"geomean_{kind}_ratio_ci95")
    band = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{_fmt(r[f'geomean_{kind}_ratio'])}{band} / {_fmt(r[f'median_{kind}_ratio'])}"


def _families(f) -> str:
    return "every family" if f == "all" else "its training families (" + ", ".join(f) + ")"


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _group_table(groups: dict[str, Any], baseline: str) -> list[str]:
    """The speedup per family and family/size (for external files: cnf / col and the file-name groups) of each
    split that has more than one group: solved, and geomean node / time ratio vs the baseline per heuristic."""
    splits = {sp: g for sp, g in groups.items() if sum("/" in k for k in g) > 1}
    if not splits:
        return []
    hs = sorted({h for g in splits.values() for s in g.values() for h in s if h != "instances"},
                key=lambda h: (h != baseline, h))
    L = ["", f"Per family and group (solved; geomean node / time ratio vs {baseline}; the intervals are in "
         "evaluation.json `speedup.groups`). The learned heuristic is trained on `train.families` only: the "
         "other families are zero-shot, and no external file was seen in training (a CNF file is k-SAT, a "
         "graph file colouring).", "",
         "| split | group | instances | " + " | ".join(hs) + " |", "|---|---|---|" + "---|" * len(hs)]
    for split, g in splits.items():
        sub = {f: [k for k in g if k.startswith(f + "/")] for f in g if "/" not in f}
        # each family, then its groups; a family of one group is that group's row only
        keys = [k for f in sorted(sub) for k in ([f] if len(sub[f]) > 1 else []) + sorted(sub[f])]
        for key in keys:
            cells = []
            for h in hs:
                r = g[key].get(h)
                if r is None:
                    cells.append("-")
                elif h == baseline:
                    cells.append(f"{r['solved']}/{r['of']}")
                else:
                    cells.append(f"{r['solved']}/{r['of']}; {_fmt(r['geomean_node_ratio'])} / "
                                 f"{_fmt(r['geomean_time_ratio'])}")
            name = f"**{key}** (all)" if "/" not in key else key
            L.append(f"| {split} | {name} | {g[key]['instances']} | " + " | ".join(cells) + " |")
    return L


def run(ctx: StageContext) -> StageResult:
    from ..registry import Registry

    cfg, paths = ctx.cfg, ctx.paths
    d = deployed()  # the model the solver calls: the report's headline is about it
    out = paths.reports
    out.mkdir(parents=True, exist_ok=True)
    m = ctx.manifest.data
    data_rep = _load(paths.dataset / "report" / "report.json")
    train = _load(paths.models / "train_summary.json")
    export = _load(paths.models / "export_summary.json")
    ev = _load(paths.evaluation / "evaluation.json")
    tune = _load(paths.tune / "summary.json")
    metrics: dict[str, Any] = {"run": cfg.run.name, "config_hash": m.get("config_hash"),
                               "git_commit": m.get("git_commit")}
    L = [f"# Run report: {cfg.run.name}", "",
         f"Config hash `{m.get('config_hash')}`, seed {cfg.run.seed}, git `{m.get('git_commit')}`, "
         f"Ray {m['versions'].get('ray')}, torch {m['versions'].get('torch')}, "
         f"onnxruntime {m['versions'].get('onnxruntime')}.", "",
         "| stage | status | seconds |", "|---|---|---|"]
    for name, s in m.get("stages", {}).items():
        status = "writing this report" if name == "report" and s.get("status") == "running" else s.get("status")
        L.append(f"| {name} | {status} | {s.get('seconds', '-')} |")

    if data_rep:
        metrics["dataset"] = {"states": data_rep["states_per_split"], "instances": data_rep["instances"],
                              "expansion_factor": data_rep["expansion_factor"], "labels": data_rep["labels"]}
        L += ["", "## Dataset", "",
              f"{data_rep['instances']['built']} instances ({data_rep['instances']['valid_pct']}% valid), "
              f"labelled states per split {data_rep['states_per_split']}, expansion factor "
              f"{data_rep['expansion_factor']}; dom/wdeg's choice is the cheapest probe in "
              f"{data_rep['labels']['dom_wdeg_choice_is_best_pct']}% of states. "
              f"Full report: [dataset report](../datasets/main/report/report.md)."]

    if train:
        ratio, ref = top1_ratio_key(), d.compare_to
        metrics["train"] = {"test": train["test"], ratio: train[ratio],
                            "params": {k: train[k]["params"] for k in KINDS}}
        fams = train["test"][d.name].get("families", "all")
        L += ["", f"## Models (test split, families: {', '.join(fams) if isinstance(fams, list) else fams})", "",
              "| model | params | top-1 | top-3 | MRR |", "|---|---|---|---|---|"]
        # optional scorers the run trained (train.models), on their own families' test states
        extra = [k for k, kd in OPTIONAL_KINDS.items() if kd.scorer and k in train and k in train["test"]]
        for k in [*(s.name for s in scorers()), *extra]:
            t = train["test"][k]
            own = t.get("families")
            name = f"{k} (families: {', '.join(own)})" if k in extra and own and own != fams else k
            L.append(f"| {name} | {train[k]['params']} | {_fmt(t['top1'])} | {_fmt(t['top3'])} | {_fmt(t['mrr'])} |")
        L.append(f"| dom/wdeg's choice | - | {_fmt(train['test'][d.name]['baseline_top1'])} | - | - |")
        L += ["", f"{d.name.capitalize()}/{ref} top-1: {_fmt(train[ratio], 4)} "
              f"({d.name} has {train[d.name]['params'] / train[ref]['params']:.1%} of the {ref}'s "
              f"parameters)."]
        for k in KINDS:
            src = paths.model(k) / "curves.png"
            if src.exists():
                shutil.copyfile(src, out / f"curves_{k}.png")
        L += ["", " ".join(f"![{k}](curves_{k}.png)" for k in KINDS)]

    if tune:
        metrics["tune"] = {"best_params": tune["best_params"], "best_value": tune["best_value"]}
        L += ["", "## Sweep", "", f"Best {tune['metric']} {_fmt(tune['best_value'], 4)} with "
              f"`{json.dumps(tune['best_params'])}` ({len(tune['trials'])} trials); see "
              f"[tune summary](../tune/summary.md)."]

    if ev:
        sp = ev["speedup"]
        metrics["speedup"] = sp["summary"]
        L += ["", f"## Solver speedup (MAC; learned = {_model_label(sp['learned']['model'])}, top-{sp['learned']['top_k']}, "
              f"max depth {sp['learned']['max_depth']}, min margin {sp['learned'].get('min_margin', 0.0)}; ratios vs {sp['baseline']}, geometric mean over "
              f"instances both solved; wall time = minimum of {sp.get('repeats', 1)} interleaved runs and includes "
              f"features and model calls)", "",
              "| split | heuristic | solved | node ratio: geomean [95% CI] / median | "
              "time ratio: geomean [95% CI] / median | node wins/losses | time wins/losses |",
              "|---|---|---|---|---|---|---|"]
        by_status = []
        for split, s in sp["summary"].items():
            for h, r in s.items():
                if h == "instances":
                    continue
                L.append(f"| {split} | {h} | {r['solved']}/{r['of']} | {_ratio_cell(r, 'node')} | "
                         f"{_ratio_cell(r, 'time')} | {r['node_wins']}/{r['node_losses']} | "
                         f"{r['time_wins']}/{r['time_losses']} |")
                if h == "learned":
                    by_status += [f"{split} {st} ({g['compared']}): nodes {_fmt(g['geomean_node_ratio'])}, time "
                                  f"{_fmt(g['geomean_time_ratio'])}" for st, g in r.get("by_status", {}).items()]
        L += ["", "A ratio below 1 favours the heuristic; the interval is a bootstrap over instances, so a claim "
              "that the learned heuristic beats the baseline holds only where the whole interval is below 1. "
              "`ray-pipeline bench heldout CONFIG --count 100` runs the same setting on more held-out instances "
              "of the same kind (these first)."]
        if by_status:
            L += ["", "Learned vs the baseline by the baseline's answer (geomean): " + "; ".join(by_status) + "."]
        L += _group_table(sp.get("groups", {}), sp["baseline"])
        if sp.get("expert"):
            x = sp["expert"]
            L += ["", f"expert = the labeller run online: at each decision up to depth {x['max_depth']}, the top-"
                  f"{x['top_k']} by dom/wdeg are probed ({x['probe_budget']} nodes each) and the cheapest is branched "
                  f"on; it runs on the first {x['max_instances']} instances of each split (probes cost 10-100x a "
                  "search). Its node ratio is the ceiling of imitating such labels; its time includes the probes and is one "
                  "run (the others: the best of the rounds), so its time ratio leans high."]
            for split, s in sp.get("expert_subset", {}).items():
                ex, lr = s.get("expert", {}), s.get("learned", {})
                L.append(f"- {split}, the {s['instances']} instances the expert ran on: expert nodes "
                         f"{_fmt(ex.get('geomean_node_ratio'))} {ex.get('geomean_node_ratio_ci95')}, time "
                         f"{_fmt(ex.get('geomean_time_ratio'))}; learned nodes {_fmt(lr.get('geomean_node_ratio'))} "
                         f"{lr.get('geomean_node_ratio_ci95')}, time {_fmt(lr.get('geomean_time_ratio'))}")
        for p in ev.get("plots", []):
            if Path(p).exists():
                shutil.copyfile(p, out / Path(p).name)
        L += ["", "![nodes](speedup_nodes.png) ![ratios](speedup_ratios.png)"]
        cal = ev["calibration"]
        metrics["calibration"] = {**{k: {"ece": cal[k]["ece"], "ece_ci95": cal[k].get("ece_ci95"),
                                         "temperature": cal[k]["temperature"]} for k in ("before", "after")},
                                  "families": cal.get("families", "all"), "test_states": cal.get("test_states"),
                                  "test_instances": cal.get("test_instances"), "val_ece": cal.get("val_ece"),
                                  "fresh": None if not cal.get("fresh") else
                                  {k: cal["fresh"].get(k) for k in ("copies", "instances_built", "states", "instances", "before", "after")}}
        fr = cal.get("fresh")
        L += ["", "## Checks, calibration, errors", "",
              "Checks: " + ", ".join(f"{c['name']} {'ok' if c['passed'] else 'FAILED'}"
                                     for c in ev["checks"][d.name]) + ".", "",
              f"{d.name.capitalize()} calibration on the test states of "
              f"{_families(cal.get('families', 'all'))} ({cal.get('test_states', '?')} states, "
              f"{cal.get('test_instances', '?')} instances, {cal['before']['bins']} bins): ECE "
              f"{cal['before']['ece']:.3f} at T=1, {cal['after']['ece']:.3f} at T={cal['after']['temperature']} "
              f"fitted on val (instance-bootstrap 95% interval {_fmt(cal['after'].get('ece_ci95'))}; on val itself "
              f"{_fmt((cal.get('val_ece') or {}).get('after'))}); on the "
              f"{cal['after'].get('unique_best_states', '?')} states with one strictly best candidate "
              f"{_fmt(cal['before'].get('ece_unique_best'))} / {_fmt(cal['after'].get('ece_unique_best'))} "
              + ("(each candidate's own sigmoid of being a cheapest one: train.target binary). "
                 if cal["after"].get("scores") == "binary" else
                 "(with tied-best candidates the softmax splits its mass among them). ") +
              (f"Other families' test states (out of its training families, same T): ECE "
               f"{cal['other_families_after']['ece']:.3f}. " if cal.get("other_families_after") else "") +
              (f"On {fr.get('instances_built', fr['instances'])} fresh instances of the training mix "
               f"({fr['states']} states from {fr['instances']} of them, never seen by any other stage; "
               f"`ray-pipeline bench calibration` for more): ECE {fr['before']['ece']:.3f} at T=1, "
               f"**{fr['after']['ece']:.3f}** at T={fr['after']['temperature']} (interval "
               f"{_fmt(fr['after'].get('ece_ci95'))}; accuracy {fr['after']['accuracy']}, mean confidence "
               f"{fr['after']['mean_confidence']}). " if fr else "") +
              "![reliability](reliability.png)", "",
              f"Cost predictor (test): {json.dumps(ev['cost'].get('test', {}))}", "", "Suggestions:", ""]
        L += [f"- {s}" for s in ev["suggestions"]]

    if export:
        s = export[d.name]
        metrics["export"] = {d.name: {"deploy": s["deploy"], "int8_choice": s["int8_choice"],
                                      "parity_max_abs_diff": s["parity"]["max_abs_diff"],
                                      "variants": s["variants"]}}
        L += ["", f"## Deployed {d.name}: size and speed", "",
              f"Deploy `{s['deploy']}`; ONNX parity max |diff| {s['parity']['max_abs_diff']:.2e}.", "",
              "| variant | size (KB) | latency, one decision (us) | latency, 256 rows (us) | rows/s | top-1 |",
              "|---|---|---|---|---|---|"]
        for r in s["variants"]:
            size = f"{r['size_bytes'] / 1024:.1f}" if r["size_bytes"] else "-"
            L.append(f"| {r['variant']} | {size} | {r['latency_single_us']} | {r['latency_batch_us']} | "
                     f"{r['throughput_rows_per_s']:.0f} | {_fmt(r.get('top1'), 4)} |")
        if s.get("pruning"):
            L += ["", "Pruning: " + ", ".join(f"{p['amount']:.0%} -> top-1 {p['top1']:.4f}" for p in s["pruning"])
                  + " (masks only: no speedup on dense kernels)."]
        L += ["", "Model cards: " + ", ".join(f"[{k}](../models/{k}/card.md)" for k in KINDS)]

    L += ["", f"Manifest: [manifest.json](../manifest.json). TensorBoard: `tensorboard --logdir {paths.tensorboard}`.", ""]
    atomic.write_text(out / "report.md", "\n".join(L))
    atomic.write_json(out / "metrics.json", metrics)
    Registry.open(paths.run.parent).add_run(run=cfg.run.name, config_hash=m.get("config_hash", ""),
                                            report=str(out / "report.md"), metrics=metrics)
    return StageResult(outputs={"report": str(out / "report.md"), "metrics": str(out / "metrics.json")},
                       output_hash=output_hash(paths))


def output_hash(paths) -> str:
    return atomic.hash_tree(paths.reports / "metrics.json")
