"""How the pipeline runs the learned heuristic with a model, stored in the model's own files, so that running
the model anywhere else (`ray-pipeline solve --model`, the web app's Model Explorer) runs what was measured.

The export stage writes one record, `LearnedSetting`, under one key, `KEY`, into every file of the model the
evaluate stage runs (`evaluate.learned.model`):
- `model.json`: `"learned_setting": {...}`;
- `model.onnx`, `model.int8.onnx`: a metadata_props entry, the record as JSON;
- `model.native.npz`: a scalar string array, the record as JSON (plain arrays: still nothing to unpickle).
Its values come from the config (`from_config`; `CONFIG_KEYS` lists them, and the export stage's hash covers
them, so a changed setting re-exports). The train stage writes the same record, with train.graph.families, into a
graph model's `model.native.npz` (the benchmarks' setting for it); when evaluate.learned.model names the graph
model, the export stage stores it again in that file and its model.json (arrays unchanged). A file exported before
the record existed still loads: `choose` falls back to `defaults()`, the config's own defaults, and says so.
Explicit settings (command-line flags) win.

Not in the record: the feature version (every file already carries it as `feature_version`, and a loader
refuses a mismatch) and the value order (the evaluate stage leaves the solver's default, which `solve`
defaults to as well).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import Config, EvaluateSection, Family, Propagation
from .errors import ModelError

KEY = "learned_setting"

# the config values the record is made of (and which model's files carry it): the export stage's hash covers them
CONFIG_KEYS = ("evaluate.learned.model", "evaluate.learned.top_k", "evaluate.learned.max_depth",
               "evaluate.learned.min_margin", "evaluate.propagation", "train.families")


class LearnedSetting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the solver's arguments for the learned heuristic (evaluate.learned, evaluate.propagation)
    top_k: int = Field(ge=1, description="score only the best K candidates by dom/wdeg")
    max_depth: Optional[int] = Field(ge=0, description="call the model only up to this depth (None = always)")
    min_margin: float = Field(ge=0, description="keep dom/wdeg's choice unless another candidate scores higher "
                              "by more than this")
    propagation: Propagation
    # what the model was trained on (train.families; None = every family of the dataset): shown, not applied
    families: Optional[tuple[Family, ...]]

    def describe(self) -> str:
        fam = ", ".join(self.families) if self.families else "all families"
        return (f"top-{self.top_k} by dom/wdeg, model called to depth {_show('max_depth', self.max_depth)}, "
                f"min margin {self.min_margin:g}, {self.propagation.upper()} (trained on {fam})")

    def to_text(self) -> str:
        """Compact JSON with sorted keys: the same setting gives the same bytes in every file."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str, source: str) -> "LearnedSetting":
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<record>'}: {err['msg']}" for err in e.errors())
            raise ModelError(f"{source}: unusable {KEY} ({bad})") from None


SOLVER_KEYS = ("top_k", "max_depth", "min_margin", "propagation")  # what a search takes from the record


def of(e: EvaluateSection, families: Optional[list[str]]) -> LearnedSetting:
    return LearnedSetting(top_k=e.learned.top_k, max_depth=e.learned.max_depth, min_margin=e.learned.min_margin,
                          propagation=e.propagation, families=tuple(families) if families else None)


def from_config(cfg: Config) -> LearnedSetting:
    """The setting the evaluate stage runs the learned heuristic with (the families: its model's)."""
    return of(cfg.evaluate, cfg.train.families_of(cfg.evaluate.learned.model))


def defaults() -> LearnedSetting:
    """For a file without a stored setting: the config's defaults (one place for them: config.py)."""
    return of(EvaluateSection(), None)


def stored_in(meta: Mapping[str, Any], source: str) -> Optional[LearnedSetting]:
    """The setting in a file's metadata (ONNX metadata_props, the native file's strings, model.json), or None."""
    v = meta.get(KEY)
    if v is None:
        return None
    return LearnedSetting.from_text(v if isinstance(v, str) else json.dumps(v), source)


@dataclass(frozen=True)
class Chosen:
    """The settings a search runs with and where each came from: "flag", "model" or "default"."""
    values: dict[str, Any]
    sources: dict[str, str]
    stored: Optional[LearnedSetting]

    def solver_kwargs(self) -> dict[str, Any]:
        return dict(self.values)

    def describe(self, model: str) -> str:
        """One line for the console or a page: the values, their sources, and a note when defaults were used."""
        parts = [f"{k}={_show(k, v)} ({self.sources[k]})" for k, v in self.values.items()]
        line = f"learned heuristic: {', '.join(parts)}"
        if self.stored is None:
            return (f"{line}\nnote: {model} stores no evaluated setting (its run's evaluate stage ran another "
                    f"model, or it was exported before models carried one): defaults were used where no flag was "
                    f"given; to store one, make it evaluate.learned.model and export again")
        fam = ", ".join(self.stored.families) if self.stored.families else "all families"
        return f"{line}; the model trained on {fam}"

    def as_dict(self) -> dict[str, Any]:
        return {**self.values, "sources": dict(self.sources), "stored": self.stored is not None,
                "families": list(self.stored.families) if self.stored and self.stored.families else None}


def choose(stored: Optional[LearnedSetting], flags: Mapping[str, Any]) -> Chosen:
    """Each of SOLVER_KEYS from `flags` when given (a key present, even with value None = "always" for
    max_depth), else from the model's stored setting, else from the defaults."""
    unknown = set(flags) - set(SOLVER_KEYS)
    if unknown:
        raise ValueError(f"not a learned-heuristic setting: {sorted(unknown)}")
    base, src = (stored, "model") if stored is not None else (defaults(), "default")
    values = {k: flags[k] if k in flags else getattr(base, k) for k in SOLVER_KEYS}
    return Chosen(values, {k: "flag" if k in flags else src for k in SOLVER_KEYS}, stored)


def _show(key: str, value: Any) -> str:
    return "all" if key == "max_depth" and value is None else str(value)
