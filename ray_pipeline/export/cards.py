"""Model cards: what a model is, what it was trained on, how well it does, how big and fast it is."""
from __future__ import annotations

import json
from typing import Any

from .. import learned_setting
from ..config import Config
from ..kinds import kind_of


def model_card(kind: str, spec: dict[str, Any], export: dict[str, Any], train: dict[str, Any], cfg: Config) -> str:
    s = spec.get("summary", {})
    lines = [f"# Model card: {kind}", "", kind_of(kind).description, "",
             "## Identity", "",
             f"- run: `{cfg.run.name}`, seed {cfg.run.seed}, train key `{spec['train_key']}`, dataset hash "
             f"`{spec['dataset_hash']}`",
             f"- features: version `{spec['feature_version']}`, {len(spec['features'])} inputs (raw; "
             f"normalisation is inside the model)",
             f"- hyperparameters: `{json.dumps(spec['hparams'])}`; parameters: {export['params']}", "",
             "## Training", "",
             f"- epochs run: {s.get('epochs_run')}; best validation: "
             f"{ {k: round(v, 4) for k, v in s.get('best', {}).items() if k.startswith('val_')} }"]
    if kind_of(kind).scorer and kind in train.get("test", {}):
        t = train["test"][kind]
        lines.append(f"- test split: top-1 {t['top1']:.3f}, top-3 {t['top3']:.3f}, MRR {t['mrr']:.3f} "
                     f"(dom/wdeg's choice is best in {t['baseline_top1']:.3f} of states), n={t['n']}")
    lines += ["", "## Deployment", "", f"- ONNX parity with PyTorch on dataset rows: max |diff| "
              f"{export['parity']['max_abs_diff']:.2e} (atol {export['parity']['atol']}), "
              f"{'passed' if export['parity']['passed'] else 'FAILED'}"]
    if export.get("native_parity"):
        n = export["native_parity"]
        lines.append(f"- native MLP (`model.native.npz`, scored inside the solver core) vs ONNX Runtime FP32 on "
                     f"{n['rows']} test rows: max |diff| {n['max_abs_diff']:.2e} (atol {n['atol']}), "
                     f"{'passed' if n['passed'] else 'FAILED: not written, not deployed'}")
    if export.get("deploy"):
        lines.append(f"- deploy: `{export['deploy']}` (INT8 choice `{export.get('int8_choice')}`, within the "
                     f"top-1 tolerance: {export.get('int8_within_tolerance')})")
    stored = learned_setting.stored_in(spec, "model.json")
    if stored is not None:
        lines.append(f"- evaluated as the learned heuristic with {stored.describe()}; stored in every file of "
                     f"this model, `ray-pipeline solve --model` runs it so by default")
    keys = [k for k in ("top1", "rmse_log_nodes") if k in export["variants"][0]]
    lines += ["", "| variant | size (KB) | latency 1 call (us) | latency batch (us) | rows/s | "
              + " | ".join(keys) + " |", "|---" * (5 + len(keys)) + "|"]
    for r in export["variants"]:
        size = f"{r['size_bytes'] / 1024:.1f}" if r["size_bytes"] else "-"
        vals = " | ".join(f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys)
        lines.append(f"| {r['variant']} | {size} | {r['latency_single_us']} | {r['latency_batch_us']} "
                     f"({r['batch_rows']} rows) | {r['throughput_rows_per_s']:.0f} | {vals} |")
    if export.get("pruning"):
        lines += ["", "Magnitude pruning (global L1 on Linear weights; shapes unchanged, so no speedup on dense "
                  "CPU kernels):", "", "| amount | non-zero weights | top-1 |", "|---|---|---|"]
        for p in export["pruning"]:
            lines.append(f"| {p['amount']:.0%} | {p['nonzero']}/{p['linear_weights']} | {p['top1']:.4f} |")
    lines += ["", "## Limits", "",
              "- Trained on the families and sizes of this run's dataset; larger sizes are measured on the held-out "
              "split in the evaluation report, not guaranteed.",
              "- Inputs are the solver's feature vector of the version above; another feature version is refused.", ""]
    return "\n".join(lines)
