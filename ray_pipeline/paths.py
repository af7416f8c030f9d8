"""The layout of a run directory: the one place that knows where each artifact lives."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# in a model's directory: the weights the solver core runs itself (the student's written by the export stage, the
# graph scorer's by the train stage)
NATIVE_FILE = "model.native.npz"


@dataclass(frozen=True)
class RunPaths:
    run: Path  # <run.root>/<run.name>, absolute: Train workers and Tune trials change directory

    @classmethod
    def of(cls, root: str | Path, name: str) -> "RunPaths":
        return cls(Path(root).expanduser().resolve() / name)

    @property
    def manifest(self) -> Path:
        return self.run / "manifest.json"

    @property
    def dataset(self) -> Path:
        return self.run / "datasets" / "main"

    @property
    def checkpoints(self) -> Path:
        return self.run / "checkpoints"

    @property
    def models(self) -> Path:
        return self.run / "models"

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def tune(self) -> Path:
        return self.run / "tune"

    @property
    def evaluation(self) -> Path:
        return self.run / "evaluation"

    @property
    def reports(self) -> Path:
        return self.run / "reports"

    @property
    def log(self) -> Path:
        return self.run / "logs" / "run.log"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    def train_progress(self, kind: str) -> Path:
        """One JSON line per finished epoch of the model in training (written on the driver's node)."""
        return self.logs / f"train-{kind}.progress.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.run / "tensorboard"

    @property
    def wandb(self) -> Path:
        return self.run / "wandb"


def registry_path(root: str | Path) -> Path:
    """One model registry per run root, shared by its runs."""
    return Path(root).expanduser().resolve() / "registry.sqlite"
