"""The finite-domain instance every generator and reader produces and the solver consumes.

Variables are 0..n-1 with values 0..D-1, each domain an int bitmask (bit a set = value a allowed).
Binary constraints are support tables: for a pair (x, y), `sup[a]` is the bitmask of y-values compatible
with x=a. n-ary constraints are clauses: a disjunction of literals (var, value) meaning "var == value"
(SAT: DIMACS literal +v is (v-1, 1), -v is (v-1, 0)). This one form covers all families.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "ray_pipeline.instance"
FORMAT_VERSION = 1

Literal_ = tuple[int, int]


class InstanceError(ValueError):
    """A malformed instance or instance file; the message names the file and line where known."""


def derive_seed(base: int, *parts: Any) -> int:
    """Seed from (base seed, family, size, index, ...): never from execution order, stable across platforms."""
    key = "/".join([str(base), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Instance:
    name: str
    family: str
    size: str
    seed: int
    domains: list[int]
    binary: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    clauses: list[tuple[Literal_, ...]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.domains)

    @property
    def max_dom(self) -> int:
        return max((d.bit_length() for d in self.domains), default=0)

    def check(self, source: str = "<instance>") -> "Instance":
        """Structural validation; raises InstanceError naming the first bad item."""
        n = self.n
        if n == 0:
            raise InstanceError(f"{source}: instance has no variables")
        for v, d in enumerate(self.domains):
            if not isinstance(d, int) or d <= 0:
                raise InstanceError(f"{source}: domain of variable {v} is empty or not a bitmask ({d!r})")
        for i, (x, y, sup) in enumerate(self.binary):
            if not (0 <= x < n and 0 <= y < n) or x == y:
                raise InstanceError(f"{source}: binary constraint {i} has bad scope ({x}, {y}) for {n} variables")
            if len(sup) < self.domains[x].bit_length():
                raise InstanceError(f"{source}: binary constraint {i} support table shorter than domain of {x}")
            if any((not isinstance(s, int)) or s < 0 for s in sup):
                raise InstanceError(f"{source}: binary constraint {i} has a negative or non-int support mask")
        for i, clause in enumerate(self.clauses):
            if not clause:
                raise InstanceError(f"{source}: clause {i} is empty")
            for v, a in clause:
                if not 0 <= v < n or a < 0:
                    raise InstanceError(f"{source}: clause {i} has bad literal ({v}, {a}) for {n} variables")
        return self

    def is_solution(self, assignment: list[int]) -> bool:
        return not self.violations(assignment)

    def violations(self, assignment: list[int]) -> list[str]:
        """Every constraint the full assignment breaks (empty list = a solution)."""
        bad = []
        if len(assignment) != self.n:
            return [f"assignment has {len(assignment)} values for {self.n} variables"]
        for v, (a, d) in enumerate(zip(assignment, self.domains)):
            if a < 0 or not (d >> a) & 1:
                bad.append(f"variable {v}: value {a} not in its domain")
        for i, (x, y, sup) in enumerate(self.binary):
            a, b = assignment[x], assignment[y]
            if a >= len(sup) or not (sup[a] >> b) & 1:
                bad.append(f"binary constraint {i} on ({x}, {y}) violated by ({a}, {b})")
        for i, clause in enumerate(self.clauses):
            if not any(assignment[v] == a for v, a in clause):
                bad.append(f"clause {i} violated")
        return bad

    def stable_id(self) -> str:
        return hashlib.sha256(dumps(self, with_meta=False).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ JSON format
def to_json_dict(inst: Instance, with_meta: bool = True) -> dict[str, Any]:
    d = {
        "format": FORMAT, "version": FORMAT_VERSION, "name": inst.name, "family": inst.family, "size": inst.size,
        "seed": inst.seed, "params": inst.params, "domains": inst.domains,
        "binary": [[x, y, list(sup)] for x, y, sup in inst.binary],
        "clauses": [[[v, a] for v, a in c] for c in inst.clauses],
    }
    if with_meta:
        d["meta"] = inst.meta
    return d


def dumps(inst: Instance, with_meta: bool = True) -> str:
    return json.dumps(to_json_dict(inst, with_meta), sort_keys=True, separators=(",", ":"))


def from_json_dict(d: Any, source: str = "<json>") -> Instance:
    if not isinstance(d, dict):
        raise InstanceError(f"{source}: expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise InstanceError(f"{source}: not a {FORMAT} file (format={d.get('format')!r})")
    if d.get("version") != FORMAT_VERSION:
        raise InstanceError(f"{source}: unsupported version {d.get('version')!r} (this reader: {FORMAT_VERSION})")
    try:
        domains = [int(x) for x in _typed(d["domains"], list, "domains", source)]
        binary = []
        for i, item in enumerate(_typed(d.get("binary", []), list, "binary", source)):
            if not isinstance(item, list) or len(item) != 3 or not isinstance(item[2], list):
                raise InstanceError(f"{source}: binary[{i}] must be [x, y, [support masks]]")
            binary.append((_int(item[0], f"binary[{i}][0]", source), _int(item[1], f"binary[{i}][1]", source),
                           tuple(_int(s, f"binary[{i}][2]", source) for s in item[2])))
        clauses = []
        for i, c in enumerate(_typed(d.get("clauses", []), list, "clauses", source)):
            if not isinstance(c, list):
                raise InstanceError(f"{source}: clauses[{i}] must be a list of [var, value] pairs")
            lits = []
            for lit in c:
                if not isinstance(lit, list) or len(lit) != 2:
                    raise InstanceError(f"{source}: clauses[{i}] has a literal that is not [var, value]")
                lits.append((_int(lit[0], f"clauses[{i}]", source), _int(lit[1], f"clauses[{i}]", source)))
            clauses.append(tuple(lits))
        inst = Instance(name=str(d.get("name", Path(source).stem)), family=str(d.get("family", "json")),
                        size=str(d.get("size", "external")), seed=_int(d.get("seed", 0), "seed", source),
                        domains=domains, binary=binary, clauses=clauses,
                        params=_typed(d.get("params", {}), dict, "params", source),
                        meta=_typed(d.get("meta", {}), dict, "meta", source))
    except KeyError as e:
        raise InstanceError(f"{source}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, InstanceError):
            raise
        raise InstanceError(f"{source}: {e}") from None
    return inst.check(source)


def _typed(v: Any, t: type, key: str, source: str) -> Any:
    if not isinstance(v, t):
        raise InstanceError(f"{source}: {key!r} must be a {t.__name__}, got {type(v).__name__}")
    return v


def _int(v: Any, key: str, source: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InstanceError(f"{source}: {key} must be an integer, got {v!r}")
    return v


def loads(text: str, source: str = "<json>") -> Instance:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise InstanceError(f"{source}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise InstanceError(f"{source}: JSON nested too deeply") from None
    return from_json_dict(d, source)


def write_json(inst: Instance, path: str | Path) -> Path:
    from .. import atomic

    return atomic.write_text(path, dumps(inst) + "\n")


def read_json(path: str | Path) -> Instance:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InstanceError(f"{path}: not a UTF-8 text file") from None
    return loads(text, str(path))
