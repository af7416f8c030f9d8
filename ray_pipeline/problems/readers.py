"""Readers for external instance files: DIMACS CNF, DIMACS graph colouring (.col) and the project's JSON.

Tolerant where real files differ (comments anywhere, a SATLIB `%` trailer, clauses across lines, duplicate
edges, extra fields on the `p` line, self-loop edges in `.col` files); strict where the content is wrong, with
file and line in the error.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

from .instance import Instance, InstanceError, read_json

log = logging.getLogger(__name__)

MAX_VARS = 10_000_000
# Self-loops named one by one in the warning; a file with more gets a count for the rest.
_SELF_LOOPS_NAMED = 5


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                try:
                    yield i, raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InstanceError(f"{path}:{i}: not valid UTF-8/ASCII text") from None
    except OSError as e:
        raise InstanceError(f"{path}: cannot read ({e.strerror})") from None


def _int_token(tok: str, path: Path, line: int, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise InstanceError(f"{path}:{line}: {what} must be an integer, got {tok!r}") from None


def read_cnf(path: str | Path) -> Instance:
    """DIMACS CNF -> boolean instance. Variable v (1-based) is index v-1; literal +v is (v-1, 1), -v is (v-1, 0)."""
    path = Path(path)
    n_vars: Optional[int] = None
    n_declared = 0
    clauses: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    last_line = 0
    for line_no, text in _lines(path):
        last_line = line_no
        s = text.strip()
        if not s or s[0] == "c":
            continue
        if s[0] == "%":  # SATLIB trailer: the rest of the file is not clauses
            break
        if s[0] == "p":
            parts = s.split()
            if n_vars is not None:
                raise InstanceError(f"{path}:{line_no}: second 'p' header")
            if len(parts) < 4 or parts[1] != "cnf":
                raise InstanceError(f"{path}:{line_no}: expected 'p cnf <variables> <clauses>', got {s!r}")
            n_vars = _int_token(parts[2], path, line_no, "number of variables")
            n_declared = _int_token(parts[3], path, line_no, "number of clauses")
            if not 0 < n_vars <= MAX_VARS or n_declared < 0:
                raise InstanceError(f"{path}:{line_no}: bad header counts ({n_vars} variables, {n_declared} clauses)")
            continue
        if n_vars is None:
            raise InstanceError(f"{path}:{line_no}: clause before the 'p cnf' header")
        for tok in s.split():
            lit = _int_token(tok, path, line_no, "literal")
            if lit == 0:
                if not current:
                    raise InstanceError(f"{path}:{line_no}: empty clause")
                clauses.append(tuple(dict.fromkeys(current)))  # drop repeated literals, keep order
                current = []
            else:
                if abs(lit) > n_vars:
                    raise InstanceError(f"{path}:{line_no}: literal {lit} exceeds the {n_vars} declared variables")
                current.append((abs(lit) - 1, 1 if lit > 0 else 0))
    if n_vars is None:
        raise InstanceError(f"{path}: no 'p cnf' header")
    if current:
        raise InstanceError(f"{path}:{last_line}: last clause is not terminated by 0 (truncated file?)")
    if not clauses:
        raise InstanceError(f"{path}: no clauses")
    return Instance(name=path.stem, family="cnf", size="external", seed=0, domains=[0b11] * n_vars,
                    clauses=clauses, params={"n": n_vars, "m": len(clauses)},
                    meta={"source": str(path), "declared_clauses": n_declared, "format": "cnf"}).check(str(path))


def read_col(path: str | Path, colors: int, strict: bool = False) -> Instance:
    """DIMACS graph colouring with `colors` colours. Vertex v (1-based) is index v-1; colours are 0..K-1.

    A self-loop edge (`e v v`) is dropped with a warning naming file and line: standard benchmarks carry them
    as artifacts (homer.col has one) and colouring benchmarks ignore them. `strict=True` refuses the file.
    """
    path = Path(path)
    if not isinstance(colors, int) or colors < 1 or colors > 4096:
        raise InstanceError(f"{path}: number of colours must be an integer in 1..4096, got {colors!r}")
    n: Optional[int] = None
    edges: set[tuple[int, int]] = set()
    self_loops: list[tuple[int, int]] = []  # (line, vertex)
    for line_no, text in _lines(path):
        s = text.strip()
        if not s or s[0] == "c":
            continue
        parts = s.split()
        if parts[0] == "p":
            if n is not None:
                raise InstanceError(f"{path}:{line_no}: second 'p' header")
            if len(parts) < 4 or parts[1] not in ("edge", "edges", "col"):
                raise InstanceError(f"{path}:{line_no}: expected 'p edge <vertices> <edges>', got {s!r}")
            n = _int_token(parts[2], path, line_no, "number of vertices")
            _int_token(parts[3], path, line_no, "number of edges")
            if not 0 < n <= MAX_VARS:
                raise InstanceError(f"{path}:{line_no}: bad number of vertices {n}")
        elif parts[0] == "e":
            if n is None:
                raise InstanceError(f"{path}:{line_no}: edge before the 'p edge' header")
            if len(parts) < 3:
                raise InstanceError(f"{path}:{line_no}: expected 'e <u> <v>', got {s!r}")
            u = _int_token(parts[1], path, line_no, "vertex")
            v = _int_token(parts[2], path, line_no, "vertex")
            for w in (u, v):
                if not 1 <= w <= n:
                    raise InstanceError(f"{path}:{line_no}: vertex {w} outside 1..{n}")
            if u == v:
                if strict:
                    raise InstanceError(f"{path}:{line_no}: self-loop on vertex {u} (no colouring exists; "
                                        f"without strict mode it is dropped with a warning)")
                self_loops.append((line_no, u))
                continue
            edges.add((min(u, v) - 1, max(u, v) - 1))
        elif parts[0] in ("n", "x", "d", "v"):  # node weights and other DIMACS extensions: not used here
            continue
        else:
            raise InstanceError(f"{path}:{line_no}: unknown line type {parts[0]!r}")
    if n is None:
        raise InstanceError(f"{path}: no 'p edge' header")
    meta = {"source": str(path), "format": "col"}
    if self_loops:
        _warn_self_loops(path, self_loops)
        meta["dropped_self_loops"] = len(self_loops)
    return coloring_instance(path.stem, n, sorted(edges), colors, family="col", size="external", seed=0, meta=meta)


def _warn_self_loops(path: Path, self_loops: list[tuple[int, int]]) -> None:
    for line_no, v in self_loops[:_SELF_LOOPS_NAMED]:
        log.warning("%s:%d: self-loop on vertex %d dropped (a benchmark artifact; strict mode refuses it)",
                    path, line_no, v)
    if len(self_loops) > _SELF_LOOPS_NAMED:
        rest = self_loops[_SELF_LOOPS_NAMED:]
        log.warning("%s: %d more self-loops dropped, lines %d..%d", path, len(rest), rest[0][0], rest[-1][0])


def coloring_instance(name: str, n: int, edges: list[tuple[int, int]], k: int, *, family: str, size: str, seed: int,
                      params: Optional[dict] = None, meta: Optional[dict] = None) -> Instance:
    full = (1 << k) - 1
    neq = tuple(full & ~(1 << a) for a in range(k))
    return Instance(name=name, family=family, size=size, seed=seed, domains=[full] * n,
                    binary=[(u, v, neq) for u, v in edges], params=dict(params or {}, n=n, k=k, edges=len(edges)),
                    meta=dict(meta or {})).check(name)


def read_instance(path: str | Path, fmt: Optional[str] = None, colors: Optional[int] = None,
                  strict: bool = False) -> Instance:
    """Read by explicit format or by suffix: .cnf, .col (needs `colors`, or `file.col:K`), .json.

    `strict` refuses what the readers otherwise drop with a warning (today: self-loops in a .col graph)."""
    spec = str(path)
    if colors is None and ":" in Path(spec).name and spec.rsplit(":", 1)[1].isdigit():
        spec, k = spec.rsplit(":", 1)
        colors = int(k)
    p = Path(spec)
    if not p.exists():
        raise InstanceError(f"{p}: no such file")
    fmt = fmt or {".cnf": "cnf", ".col": "col", ".json": "json"}.get(p.suffix.lower())
    if fmt == "cnf":
        return read_cnf(p)
    if fmt == "col":
        if colors is None:
            raise InstanceError(f"{p}: a .col file needs the number of colours (--colors K or {p.name}:K)")
        return read_col(p, colors, strict=strict)
    if fmt == "json":
        return read_json(p)
    raise InstanceError(f"{p}: unknown format (use --format cnf|col|json or a .cnf/.col/.json suffix)")
