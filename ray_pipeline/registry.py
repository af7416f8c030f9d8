"""The model/run registry: one SQLite file per run root, listing every exported model with its metrics,
dataset and config hashes, so runs can be compared and a model traced back to its data and settings."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .manifest import now
from .paths import registry_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
  run TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, created TEXT NOT NULL,
  train_key TEXT, dataset_hash TEXT, config_hash TEXT, feature_version TEXT, params INTEGER,
  onnx_bytes INTEGER, int8_bytes INTEGER, deploy TEXT, metrics TEXT,
  PRIMARY KEY (run, name)
);
CREATE TABLE IF NOT EXISTS runs (
  run TEXT PRIMARY KEY, updated TEXT NOT NULL, config_hash TEXT, report TEXT, metrics TEXT
);
"""


class Registry:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def open(cls, root: str | Path) -> "Registry":
        path = registry_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.executescript(_SCHEMA)
        return cls(path)

    def add_model(self, *, run: str, name: str, kind: str, path: str, spec: dict[str, Any], export: dict[str, Any],
                  config_hash: str) -> None:
        onnx = Path(path) / "model.onnx"
        int8 = Path(path) / "model.int8.onnx"
        metrics = {"train": spec.get("summary", {}).get("best", {}), "variants": export.get("variants", []),
                   "parity": export.get("parity")}
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (run, name, kind, path, now(), spec.get("train_key"), spec.get("dataset_hash"), config_hash,
                        spec.get("feature_version"), export.get("params"),
                        onnx.stat().st_size if onnx.exists() else None, int8.stat().st_size if int8.exists() else None,
                        export.get("deploy"), json.dumps(metrics)))

    def add_run(self, *, run: str, config_hash: str, report: str, metrics: dict[str, Any]) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?)",
                       (run, now(), config_hash, report, json.dumps(metrics)))

    def models(self, run: str | None = None) -> list[dict[str, Any]]:
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            q = "SELECT * FROM models" + (" WHERE run = ?" if run else "") + " ORDER BY run, name"
            return [dict(r) for r in db.execute(q, (run,) if run else ())]

    def runs(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY run")]
