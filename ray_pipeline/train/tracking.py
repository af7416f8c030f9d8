"""Run tracking on the driver: CSV/JSON metrics, TensorBoard event files and learning-curve PNGs.

Written from the metrics Ray Train collected (rank 0's reports), so it works the same on one machine and on a
cluster whose workers cannot see the run directory. W&B logging happens in rank 0 itself (see loop.py).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .. import atomic


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic.write_text(path, buf.getvalue())


def write_tensorboard(logdir: Path, rows: list[dict[str, Any]], prefix: str = "") -> None:
    from tensorboardX import SummaryWriter

    logdir.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(str(logdir)) as w:
        for r in rows:
            step = int(r.get("epoch", 0))
            for k, v in r.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    w.add_scalar(f"{prefix}{k}", v, step)


def plot_curves(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    from ..plots import pyplot, save

    plt = pyplot()

    ep = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("train_loss", "val_loss"):
        if rows and key in rows[0]:
            axes[0].plot(ep, [r.get(key) for r in rows], marker="o", ms=3, label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title(f"{title}: loss")
    axes[0].legend(fontsize=8)
    keys = [k for k in ("val_top1", "val_top3", "val_mrr", "val_baseline_top1", "val_log_nodes_r2",
                        "val_log_time_r2") if rows and k in rows[0]]
    for key in keys:
        axes[1].plot(ep, [r.get(key) for r in rows], marker="o", ms=3, label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title(f"{title}: validation")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
