"""Generators (contract tests over every family), readers and the JSON format."""
import json
import logging
import math
import re
import subprocess
import sys

import pytest

from ray_pipeline.problems import (FAMILY_DEFAULTS, SIZE_DEFAULTS, InstanceError, dumps, generate, loads, read_cnf,
                                   read_col, read_instance)
from ray_pipeline.solver import count_solutions, solve

from ..conftest import BENCHMARKS, REPO

FAMILIES = sorted(SIZE_DEFAULTS)


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_contract(family):
    a = generate(family, "small", 3, base_seed=7)
    b = generate(family, "small", 3, base_seed=7)
    c = generate(family, "small", 4, base_seed=7)
    d = generate(family, "small", 3, base_seed=8)
    assert dumps(a) == dumps(b)  # deterministic per (seed, family, size, index)
    assert a.seed == b.seed != c.seed != d.seed
    assert dumps(a) != dumps(c) or family == "nqueens"
    assert (a.family, a.size, a.name) == (family, "small", f"{family}-small-00003")
    assert loads(dumps(a)).stable_id() == a.stable_id()  # JSON round trip
    for size in SIZE_DEFAULTS[family]:
        assert generate(family, size, 0, 0).n > 0


def test_model_rb_parameters_follow_the_definition():
    inst = generate("rb", "large", 0, 0, {"n": 35})
    d = round(35 ** 0.7)
    assert inst.meta["d"] == d and inst.meta["m"] == round(3 * 35 * math.log(35))
    assert inst.meta["p"] == pytest.approx(1 - math.exp(-0.7 / 3))
    forbidden = round(inst.meta["p"] * d * d)
    for x, y, sup in inst.binary:
        assert sum(d - bin(s).count("1") for s in sup) == forbidden


def test_forced_rb_and_planted_colouring_are_satisfiable_by_their_plant():
    for i in range(5):
        rb = generate("rb", "medium", i, 1, {"forced": True})
        assert rb.is_solution(rb.meta["planted"])
        col = generate("coloring", "medium", i, 1, {"planted": True, "avg_degree": 6.0})
        assert col.is_solution(col.meta["planted"])


def test_ksat_shape():
    inst = generate("ksat", "medium", 0, 0, {"ratio": 4.26})
    assert len(inst.clauses) == round(4.26 * 50)
    assert all(len({v for v, _ in c}) == 3 for c in inst.clauses)


def test_sudoku_has_the_clue_count_and_a_unique_solution():
    for i in range(3):
        inst = generate("sudoku", "medium", i, 0)
        assert inst.meta["clues"] == 30
        assert sum(1 for dmask in inst.domains if dmask & (dmask - 1) == 0) == 30
        assert count_solutions(inst, limit=5) == 1
        assert inst.is_solution(inst.meta["solution"])


def test_nqueens_counts_match_the_known_sequence():
    for n, known in ((6, 4), (7, 40), (8, 92)):
        inst = generate("nqueens", "small", 0, 0, {"n": n, "prefill": 0.0})
        assert count_solutions(inst, limit=1000) == known
        assert count_solutions(inst, limit=1000, propagation="fc", heuristic="lex") == known


def test_unknown_family_size_and_param_are_errors():
    with pytest.raises(ValueError, match="unknown family"):
        generate("tsp", "small", 0, 0)
    with pytest.raises(ValueError, match="unknown size"):
        generate("rb", "huge", 0, 0)
    with pytest.raises(ValueError, match="unknown parameter"):
        generate("rb", "small", 0, 0, {"colours": 3})
    assert set(FAMILY_DEFAULTS) == set(SIZE_DEFAULTS)


# ----------------------------------------------------------------------------------------- readers
def test_cnf_reader_tolerates_comments_trailer_and_clauses_across_lines(tmp_path):
    p = tmp_path / "x.cnf"
    p.write_text("c hello\np cnf 3 2\n1 -2\n 3 0 c\n-1 0\n%\n0\n\n")
    # "c" after 0 on a line is not a comment in DIMACS; keep the test honest: use a clean line
    p.write_text("c hello\np cnf 3 2\n1 -2\n 3 0\nc mid comment\n-1 0\n%\n0\n\n")
    inst = read_cnf(p)
    assert inst.n == 3 and inst.clauses == [((0, 1), (1, 0), (2, 1)), ((0, 0),)]
    r = solve(inst)
    assert r.status == "SAT" and r.assignment[0] == 0


@pytest.mark.parametrize("text,where", [
    ("1 2 0\n", ":1: clause before"),
    ("p cnf 2 1\n1 3 0\n", ":2: literal 3 exceeds"),
    ("p cnf 2 1\n1 x 0\n", ":2: literal must be an integer"),
    ("p cnf 2 1\n1 2\n", ":2: last clause is not terminated"),
    ("p cnf two 1\n", ":1: number of variables"),
    ("p dnf 2 1\n", ":1: expected 'p cnf"),
    ("c only comments\n", "no 'p cnf' header"),
    ("p cnf 2 1\n0\n", ":2: empty clause"),
])
def test_cnf_reader_errors_name_file_and_line(tmp_path, text, where):
    p = tmp_path / "bad.cnf"
    p.write_text(text)
    with pytest.raises(InstanceError) as ei:
        read_cnf(p)
    assert str(p) in str(ei.value) and where in str(ei.value)


def test_col_reader_tolerates_duplicates_and_extra_header_fields(tmp_path):
    p = tmp_path / "g.col"
    p.write_text("c graph\np edge 3 4 extra\ne 1 2\ne 2 1\ne 2 3\ne 1 2\n")
    inst = read_col(p, 2)
    assert inst.n == 3 and len(inst.binary) == 2
    assert solve(inst).status == "SAT"
    assert solve(read_col(p, 1)).status == "UNSAT"


@pytest.mark.parametrize("text,where", [
    ("e 1 2\n", ":1: edge before"),
    ("p edge 2 1\ne 1 3\n", ":2: vertex 3 outside"),
    ("p edge 2 1\nq 1 2\n", ":2: unknown line type"),
    ("p edge 2 1\ne 1\n", ":2: expected 'e <u> <v>'"),
])
def test_col_reader_errors_name_file_and_line(tmp_path, text, where):
    p = tmp_path / "bad.col"
    p.write_text(text)
    with pytest.raises(InstanceError) as ei:
        read_col(p, 3)
    assert str(p) in str(ei.value) and where in str(ei.value)


# homer.col (DIMACS) has a self-loop: drop it with a warning naming file and line; strict mode refuses it.
SELF_LOOP_COL = "c like homer.col\np edge 3 3\ne 1 2\ne 2 2\ne 2 3\n"


def test_col_reader_drops_a_self_loop_with_a_warning_naming_file_and_line(tmp_path, caplog):
    p = tmp_path / "loop.col"
    p.write_text(SELF_LOOP_COL)
    with caplog.at_level(logging.WARNING, logger="ray_pipeline.problems.readers"):
        inst = read_col(p, 2)
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}:4: self-loop on vertex 2 dropped (a benchmark artifact; strict mode refuses it)"]
    assert sorted(e[:2] for e in inst.binary) == [(0, 1), (1, 2)]
    assert inst.meta["dropped_self_loops"] == 1
    assert solve(inst).status == "SAT"  # a path colours with 2 colours once the loop is gone
    with pytest.raises(InstanceError, match=re.escape(f"{p}:4: self-loop on vertex 2")):
        read_col(p, 2, strict=True)
    with pytest.raises(InstanceError, match=":4: self-loop"):
        read_instance(f"{p}:2", strict=True)


def test_col_reader_names_the_first_self_loops_and_counts_the_rest(tmp_path, caplog):
    p = tmp_path / "loops.col"
    p.write_text("p edge 9 9\n" + "".join(f"e {v} {v}\n" for v in range(1, 9)) + "e 1 9\n")
    with caplog.at_level(logging.WARNING, logger="ray_pipeline.problems.readers"):
        inst = read_col(p, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:5] == [f"{p}:{v + 1}: self-loop on vertex {v} dropped (a benchmark artifact; strict mode "
                            f"refuses it)" for v in range(1, 6)]
    assert messages[5:] == [f"{p}: 3 more self-loops dropped, lines 7..9"]
    assert len(inst.binary) == 1 and inst.meta["dropped_self_loops"] == 8


def _solve_cli(*args: str) -> subprocess.CompletedProcess:
    # a subprocess: what a user sees on stderr, with the CLI's own logging set-up (pytest's would hide it)
    return subprocess.run([sys.executable, "-m", "ray_pipeline.cli", "solve", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_solve_command_warns_on_a_self_loop_and_refuses_it_with_strict(tmp_path):
    p = tmp_path / "loop.col"
    p.write_text(SELF_LOOP_COL)
    ok = _solve_cli(str(p), "--colors", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["status"] == "SAT"
    assert f"WARNING ray_pipeline.problems.readers: {p}:4: self-loop on vertex 2 dropped" in ok.stderr
    refused = _solve_cli(str(p), "--colors", "2", "--strict")
    assert refused.returncode == 2
    assert f"error: {p}:4: self-loop on vertex 2" in refused.stderr
    assert "WARNING" not in refused.stderr


def test_read_instance_dispatch_and_colour_suffix(tmp_path):
    inst = read_instance(f"{BENCHMARKS}/col/myciel6.col:7")
    assert inst.params["k"] == 7 and inst.n == 95
    with pytest.raises(InstanceError, match="number of colours"):
        read_instance(BENCHMARKS / "col" / "myciel6.col")
    with pytest.raises(InstanceError, match="unknown format"):
        read_instance(BENCHMARKS.parent / "README.md")
    with pytest.raises(InstanceError, match="no such file"):
        read_instance(tmp_path / "missing.cnf")


@pytest.mark.parametrize("text,msg", [
    ("{", "line 1: invalid JSON"),
    ("[]", "expected a JSON object"),
    ('{"format": "other"}', "not a ray_pipeline.instance"),
    ('{"format": "ray_pipeline.instance", "version": 1}', "missing key 'domains'"),
    ('{"format": "ray_pipeline.instance", "version": 1, "domains": [3, 0]}', "domain of variable 1"),
    ('{"format": "ray_pipeline.instance", "version": 1, "domains": [3], "binary": [[0, 0, [1, 1]]]}', "bad scope"),
    ('{"format": "ray_pipeline.instance", "version": 1, "domains": [3], "clauses": [[[5, 1]]]}', "bad literal"),
])
def test_json_reader_errors(tmp_path, text, msg):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(InstanceError) as ei:
        read_instance(p)
    assert str(p) in str(ei.value) and msg in str(ei.value)
