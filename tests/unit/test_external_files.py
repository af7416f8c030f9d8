"""The evaluate stage's external split: DIMACS files named in evaluate.files (globs allowed), summarised per
family (cnf, col) and per file group (uf20, uf50, uuf50, one group per graph)."""
import os

import pytest

from ray_pipeline.config import load_config
from ray_pipeline.evaluate import speedup
from ray_pipeline.evaluate.stage import file_items
from ray_pipeline.problems.instance import loads

from ..conftest import CONFIGS, REPO


def test_quick_yaml_names_every_public_file_relative_to_the_repository(monkeypatch):
    monkeypatch.chdir(REPO)  # `make demo` runs there
    items = file_items(load_config(CONFIGS / "quick.yaml").evaluate.files)
    public = {p for p in os.listdir(REPO / "benchmarks" / "public" / "sat")}
    assert {it["name"] for it in items if it["family"] == "cnf"} == public
    groups = {(it["family"], it["size"]) for it in items}
    assert groups == {("cnf", "uf20"), ("cnf", "uf50"), ("cnf", "uuf50"), ("col", "queen6_6"), ("col", "jean"),
                      ("col", "myciel6"), ("col", "miles250")}
    assert [it["name"] for it in items][:2] == ["uf20-01.cnf", "uf20-010.cnf"]  # a glob's matches, sorted
    assert loads(next(it for it in items if it["name"] == "jean.col:10")["instance_json"]).n == 80


def test_a_glob_that_matches_nothing_is_an_error_naming_the_key(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match=r"evaluate.files\[1\]: 'benchmarks/public/sat/zz\*.cnf' matches no file"):
        file_items(["benchmarks/public/sat/uf20-01.cnf", "benchmarks/public/sat/zz*.cnf"])


def test_groups_summarise_each_family_and_each_file_group(monkeypatch):
    monkeypatch.chdir(REPO)
    items = file_items(["benchmarks/public/sat/uf20-0[1-3].cnf", "benchmarks/public/sat/uuf50-01.cnf",
                        "benchmarks/public/col/myciel6.col:7"])
    runs = [("dom-wdeg", "dom-wdeg", {}), ("mrv", "mrv", {})]
    rows = [r for it in items for r in speedup.solve_rounds(
        loads(it["instance_json"]), it["name"], {k: it[k] for k in ("split", "family", "size")}, runs, "mac",
        30000, 30.0, None, 1)]
    groups = speedup.summarize_groups(rows, "dom-wdeg")["external"]
    assert set(groups) == {"cnf", "cnf/uf20", "cnf/uuf50", "col", "col/myciel6"}
    assert groups["cnf"]["instances"] == 4 and groups["cnf/uf20"]["instances"] == 3
    assert groups["cnf/uuf50"]["mrv"]["by_status"].keys() == {"UNSAT"}
    assert groups["col/myciel6"]["dom-wdeg"]["solved"] == 1
    whole = speedup.summarize(rows, "dom-wdeg")["external"]["mrv"]
    assert whole["compared"] == groups["cnf"]["mrv"]["compared"] + groups["col"]["mrv"]["compared"] == 5


def test_files_are_anchored_at_the_start_and_read_without_a_working_directory(tmp_path, monkeypatch):
    """Inside a Ray Job the driver's working directory was replaced while it ran (os.getcwd() failed in the
    evaluate stage): evaluate.files are made absolute when the command starts, and reading them later needs no
    working directory at all."""
    from ray_pipeline.evaluate.stage import anchor_files

    anchored = anchor_files(["benchmarks/public/sat/uf20-0[12].cnf", "benchmarks/public/col/myciel6.col:7",
                             str(REPO / "benchmarks/public/sat/uuf50-01.cnf")], REPO)
    assert anchored == [str(REPO / "benchmarks/public/sat/uf20-0[12].cnf"),
                        str(REPO / "benchmarks/public/col/myciel6.col") + ":7",
                        str(REPO / "benchmarks/public/sat/uuf50-01.cnf")]
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        os.getcwd()
    names = [it["name"] for it in file_items(anchored)]
    assert names == ["uf20-01.cnf", "uf20-02.cnf", "myciel6.col:7", "uuf50-01.cnf"]
