"""Write a sweep's best hyperparameters back into the config file the sweep ran on.

`ray-pipeline tune CONFIG --write-back` sets each swept key (`train.<model>.<key>`) to the best trial's value in
CONFIG itself, so the next `ray-pipeline run CONFIG` trains what the sweep chose. Only those keys change: the
file's comments, order and layout are kept (a round-trip YAML editor), one comment line above `train.<model>`
names the sweep (replacing the previous write-back's), and the file is replaced only after the edited text loads
as a valid config. Pure: knows nothing of Ray.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .. import atomic
from ..config import ConfigError, validate


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments, key order and flow style survive
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    y.preserve_quotes = True
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _plain(value: Any) -> Any:
    """Tune hands back numpy scalars; YAML wants plain numbers (floats rounded to what a person would write)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        value = float(f"{value:.4g}")
    return value


def _indent_of(mapping) -> int:
    """Column of the keys of `mapping` (a nested block mapping), where a comment before one of them belongs."""
    return getattr(getattr(mapping, "lc", None), "col", 2)


def write_back(config_path: str | Path, kind: str, params: dict[str, Any], note: str) -> dict[str, tuple[Any, Any]]:
    """Set `train.<kind>.<key>` = value for every (dotted) key in `params` inside the YAML file `config_path`.
    Returns {full key: (old value or None, new value)}. Raises ConfigError (nothing written) when the file has
    no such section or the result is not a valid config."""
    path = Path(config_path)
    y = _yaml()
    mark = f"# train.{kind} swept:"
    # the previous write-back's note goes: the file says where the values it holds now came from
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.strip().startswith(mark))
    doc = y.load(text)
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("train"), dict):
        raise ConfigError(str(path), ["train: write-back needs a train section to write into"])
    section = doc["train"].setdefault(kind, {})
    changes: dict[str, tuple[Any, Any]] = {}
    for key, raw in sorted(params.items()):
        value = _plain(raw)
        node = section
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node:
                node[p] = {}
            if not isinstance(node[p], dict):
                problems.append(f"train.{kind}.{key}: {p!r} is not a section in {path}")
                break
            node = node[p]
        else:
            old = node.get(parts[-1])
            node[parts[-1]] = value
            changes[f"train.{kind}.{key}"] = (old, value)
    if problems:
        raise ConfigError(str(path), problems)
    # one comment line above the section (a flow mapping on one line has no room for a comment per key)
    doc["train"].yaml_set_comment_before_after_key(kind, before=f"{mark[2:]} {note}", indent=_indent_of(doc["train"]))
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    import yaml as pyyaml

    validate(pyyaml.safe_load(text), source=f"{path} after write-back")  # the file is replaced only if this holds
    atomic.write_text(path, text)
    return changes
