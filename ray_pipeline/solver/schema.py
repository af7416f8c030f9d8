"""The learned heuristic's feature schema: names, order and version, read from the one list the native core
is compiled from (native/features.def). Python never re-lists the names by hand."""
from __future__ import annotations

import re
from pathlib import Path

_DEF = Path(__file__).with_name("native") / "features.def"


def _read(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    version, cand, state = None, [], []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        m = re.fullmatch(r"(FEATURE_VERSION|CANDIDATE|STATE)\((\w+)\)", line)
        if not m:
            raise ValueError(f"{path}:{line_no}: expected FEATURE_VERSION(x), CANDIDATE(x) or STATE(x), got {line!r}")
        kind, name = m.groups()
        if kind == "FEATURE_VERSION":
            version = name
        else:
            (cand if kind == "CANDIDATE" else state).append(name)
    if version is None:
        raise ValueError(f"{path}: no FEATURE_VERSION line")
    return version, tuple(cand), tuple(state)


FEATURE_VERSION, CANDIDATE_FEATURES, STATE_FEATURES = _read(_DEF)
INPUT_FEATURES = CANDIDATE_FEATURES + STATE_FEATURES  # one row per candidate: its features, then the state's
