"""The run manifest: resolved config, seeds, versions, git commit and the status of every stage.

A stage is identified by two hashes: its config (the config sections it reads) and its inputs (the output
hashes of the stages it reads). A stage marked done with both hashes unchanged is skipped on re-run.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from . import atomic
from .config import Config, stable_hash

_PACKAGES = ("ray", "torch", "numpy", "pyarrow", "onnx", "onnxruntime", "onnxscript", "wandb", "pydantic")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class ManifestError(RuntimeError):
    pass


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, path: Path, cfg: Config) -> "Manifest":
        """Load the run's manifest (or start one) and record the config this invocation runs with."""
        data: dict[str, Any] = {"stages": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ManifestError(f"{path}: not a valid run manifest ({e}); move it away or use a new run.name") from None
            if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
                raise ManifestError(f"{path}: not a run manifest (no 'stages' mapping)")
        data.update({
            "run": cfg.run.name,
            "config": cfg.to_dict(),
            "config_hash": stable_hash(cfg.to_dict()),
            "seeds": {"base": cfg.run.seed},
            "versions": package_versions(),
            "git_commit": git_commit(),
            "updated": now(),
        })
        data.setdefault("created", now())
        m = cls(path, data)
        m.save()
        return m

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        if not path.exists():
            raise ManifestError(f"{path}: missing run manifest (run `ray-pipeline run` or the stage first)")
        try:
            return cls(path, json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: not a valid run manifest ({e})") from None

    def save(self) -> None:
        atomic.write_json(self.path, self.data)

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def is_current(self, name: str, config_hash: str, input_hash: str) -> bool:
        s = self.stage(name)
        return s.get("status") == "done" and s.get("config_hash") == config_hash and s.get("input_hash") == input_hash

    def output_hash(self, name: str) -> str:
        s = self.stage(name)
        if s.get("status") != "done":
            raise ManifestError(f"{self.path}: stage {name!r} has not finished (status {s.get('status', 'absent')!r})")
        return s["output_hash"]

    def mark_running(self, name: str, config_hash: str, input_hash: str) -> None:
        self.data["stages"][name] = {"status": "running", "config_hash": config_hash, "input_hash": input_hash,
                                     "started": now()}
        self.save()

    def mark_done(self, name: str, output_hash: str, outputs: dict[str, Any], seconds: float) -> None:
        s = self.data["stages"][name]
        s.update({"status": "done", "output_hash": output_hash, "outputs": outputs, "finished": now(),
                  "seconds": round(seconds, 3)})
        s.pop("error", None)
        self.save()

    def mark_failed(self, name: str, error: str) -> None:
        s = self.data["stages"].setdefault(name, {})
        s.update({"status": "failed", "error": error[:2000], "finished": now()})
        self.save()
