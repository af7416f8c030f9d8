"""No import cycles between ray_pipeline's modules, counting imports inside functions too (a lazy import hides
a cycle from Python's loader, not from the design)."""
import ast
from pathlib import Path

import ray_pipeline

PKG = Path(ray_pipeline.__file__).resolve().parent

# Cycles another change is removing; each entry must still be a cycle (the test says when one is gone).
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: add one only with the reason it cannot be broken


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def known(name: str) -> str | None:  # the module itself, or the package whose attribute it is
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                # `from . import x` names a submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                dep = known(t) if t.startswith("ray_pipeline") else None
                # a package's __init__ importing its own submodules is how packages work, not a cycle
                if dep and dep != mod and not (is_pkg and dep.startswith(mod + ".")):
                    graph[mod].add(dep)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports_inside_functions():
    g = import_graph()
    assert "ray_pipeline.solver.command" in g["ray_pipeline.cli"]  # imported inside build_parser / main
    assert "ray_pipeline.problems.readers" in g["ray_pipeline.solver.command"]  # inside run()


def test_no_import_cycles():
    cycles = {frozenset(c) for c in strongly_connected(import_graph())}
    unexpected = [sorted(c) for c in cycles - KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
    gone = [sorted(c) for c in KNOWN_CYCLES - cycles]
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {gone}"
