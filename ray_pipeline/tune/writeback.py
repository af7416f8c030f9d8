"""Write a sweep's best hyperparameters back into the config file the sweep ran on.

`ray-pipeline tune CONFIG --write-back` sets each swept key (`train.<model>.<key>`) to the best trial's value in
CONFIG itself, so the next `ray-pipeline run CONFIG` trains what the sweep chose. Only those keys change: the
lines outside `train.<model>` stay byte for byte (the section is re-emitted by a round-trip YAML editor, which
keeps its comments, key order and flow style, and spliced into the original text), one comment line above it
names the sweep (replacing the previous write-back's), and the file is replaced only after the edited text loads
as a valid config. Pure: knows nothing of Ray.
"""
from __future__ import annotations

import io
import stat
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
    y.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _float_text(v)))
    return y


def _float_text(v: float) -> str:
    """A float YAML 1.1 readers (PyYAML) also read as one: `1e-05` is a string there, `1.0e-05` a float."""
    t = repr(v)
    mantissa, e, exp = t.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + (exp if not exp or exp[0] in "+-" else "+" + exp)


def _plain(value: Any) -> Any:
    """Tune hands back numpy scalars; YAML wants plain numbers (floats rounded to what a person would write)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        value = float(f"{value:.4g}")
    return value


def _indent_of(mapping) -> int:
    """Column of the keys of `mapping`, where a comment before one of them belongs."""
    return getattr(getattr(mapping, "lc", None), "col", 0)


def write_back(config_path: str | Path, kind: str, params: dict[str, Any], note: str) -> dict[str, tuple[Any, Any]]:
    """Set `train.<kind>.<key>` = value for every (dotted) key in `params` inside the YAML file `config_path`.
    Returns {full key: (old value or None, new value)}. Raises ConfigError (nothing written) when the file has
    no such section or the result is not a valid config."""
    path = Path(config_path)
    y = _yaml()
    mark = f"# train.{kind} swept:"
    # the previous write-back's note goes: the file says where the values it holds now came from
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if not ln.strip().startswith(mark)]
    try:
        doc = y.load("".join(lines))
    except Exception as e:  # ruamel's parse errors name the line
        raise ConfigError(str(path), [f"not readable YAML: {e}"]) from e
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("train"), dict):
        raise ConfigError(str(path), ["train: write-back needs a train section to write into"])
    had_section = isinstance(doc["train"].get(kind), dict)
    if not had_section:
        doc["train"][kind] = {}  # absent or empty (`student:`): a new block
    section = doc["train"][kind]
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
    train = doc["train"]
    if had_section and not train.fa.flow_style():
        # splice: the original text around the section, the editor's text of the section, the note above it
        dumped = _dump(y, doc).splitlines(keepends=True)
        start, end = _span(doc, kind)
        new_start, new_end = _span(y.load("".join(dumped)), kind)
        col = train.lc.key(kind)[1]
        text = "".join(lines[:start] + [" " * col + f"{mark} {note}\n"] + dumped[new_start:new_end] + lines[end:])
    else:  # a section new to the file, or `train` on one line: the whole file as the editor writes it
        target, owner = (kind, train) if not train.fa.flow_style() else ("train", doc)
        owner.yaml_set_comment_before_after_key(target, before=f"{mark[2:]} {note}", indent=_indent_of(owner))
        text = _dump(y, doc)
    import yaml as pyyaml

    validate(pyyaml.safe_load(text), source=f"{path} after write-back")  # the file is replaced only if this holds
    # a symlinked config stays a link (its target is edited) and the file keeps its permissions
    target = path.resolve()
    atomic.write_text(target, text, mode=stat.S_IMODE(target.stat().st_mode))
    return changes


def _dump(y, doc) -> str:
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _span(doc, kind: str) -> tuple[int, int]:
    """[first, last + 1) lines of `train.<kind>` in a loaded document: from its key to the next key of `train`, or
    to the next top-level key after `train` (or the end) when it is the last one."""
    train = doc["train"]
    keys, top = list(train), list(doc)
    start = train.lc.key(kind)[0]
    i, j = keys.index(kind), top.index("train")
    if i + 1 < len(keys):
        return start, train.lc.key(keys[i + 1])[0]
    if j + 1 < len(top):
        return start, doc.lc.key(top[j + 1])[0]
    return start, 10**9
