"""No code outside `ray_pipeline/kinds.py` names a model kind: what differs between the teacher, the student and
the cost predictor (which one is deployed, which is compared with which, which scores sets, what a card says) is
declared once, in the registry, so a fourth kind is one new declaration plus its config section.

A static check over every module of the package (AST, so comments and docstrings do not count): a string literal
equal to a kind's name -- in a comparison (`kind == "student"`), a tuple of kinds, an index (`export["student"]`),
an argument (`paths.model("cost")`), an f-string -- fails, except the few listed below with the reason they are
data rather than dispatch."""
import ast
from pathlib import Path

import ray_pipeline
from ray_pipeline.kinds import ALL_KINDS, KINDS, cost_predictor, deployed, scorers

PKG = Path(ray_pipeline.__file__).resolve().parent

# (module path, the source line stripped): data, not dispatch. Keep this list short; a new entry needs a reason.
ALLOWED = {
    # config defaults (values a user may change in YAML), not branches in the code
    ("config.py", 'teachers: dict[str, float] = Field(default_factory=lambda: {"teacher": 1.0},'),
    ("config.py", 'model: ScorerName = "teacher"'),
    ("config.py", 'model: LearnedName = "student"'),
    # the "cost" section of evaluation.json / of an explorer result: the cost predictor's numbers, a data key
    ("evaluate/stage.py", 'ev["cost"] = _cost_metrics(paths, cost_model)'),
    ("reports/stage.py", 'f"Cost predictor (test): {json.dumps(ev[\'cost\'].get(\'test\', {}))}", "", "Suggestions:", ""]'),
    ("ui/explore.py", 'return {"instance": _describe(inst), "learned": learned, "dom-wdeg": base, "root": root, "cost": cost,'),
    ("ui/app.py", 'cost = r.get("cost")'),
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def kind_literals(names=tuple(ALL_KINDS)) -> list[tuple[str, int, str]]:
    """(module, line, source line) of every string literal equal to a kind name outside kinds.py."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel == "kinds.py":
            continue
        text = path.read_text()
        tree = ast.parse(text, str(path))
        skip = _docstrings(tree)
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names \
                    and id(node) not in skip:
                found.append((rel, node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_no_kind_name_is_dispatched_on_outside_the_registry():
    bad = [f"ray_pipeline/{m}:{n}: {src}" for m, n, src in kind_literals() if (m, src) not in ALLOWED]
    assert not bad, ("model kinds named outside ray_pipeline/kinds.py (declare the difference on the Kind "
                     "instead):\n" + "\n".join(bad))


def test_every_allowed_exception_still_exists():
    seen = {(m, src) for m, _, src in kind_literals()}
    assert not ALLOWED - seen, f"stale entries in ALLOWED: {sorted(ALLOWED - seen)}"


def test_the_check_catches_dispatch(tmp_path):
    """The scanner flags the shapes it is for (it would pass vacuously if it looked at nothing)."""
    src = ('def f(kind, export, paths):\n'
           '    """student docstring is fine"""\n'
           '    if kind == "student":\n'
           '        return export["teacher"], paths.model("cost"), f"{export[\'student\']}"\n'
           '    return [k for k in ("teacher", "student")]\n')
    tree = ast.parse(src)
    skip = _docstrings(tree)
    hits = sorted(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in KINDS
                  and id(n) not in skip)
    assert hits == [3, 4, 4, 4, 5, 5]


def test_the_registry_declares_the_roles_the_stages_ask_for():
    d = deployed()
    assert d.scorer and d.compare_to in KINDS and KINDS[d.compare_to].scorer and d.compare_to != d.name
    assert not cost_predictor().scorer
    assert [k.name for k in scorers()] == [k for k in KINDS if KINDS[k].scorer]
    assert all(k.description for k in KINDS.values())
