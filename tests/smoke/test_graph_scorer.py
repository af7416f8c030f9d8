"""The optional graph scorer (train.models=[graph]) trained by the train stage on a copy of the smoke run: its
inputs rebuilt from the dataset by replay, the same graph reaching the model in training and in the search, and
the benchmark running it as the learned heuristic."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from ray_pipeline.cli import main
from ray_pipeline.config import load_config
from ray_pipeline.data import dataset as ds_lib
from ray_pipeline.data import steps
from ray_pipeline.data.graphs import graph_arrays
from ray_pipeline.kinds import kind_of
from ray_pipeline.models import io as model_io
from ray_pipeline.paths import RunPaths
from ray_pipeline.solver import Solver, compile_instance
from ray_pipeline.solver.policy import NativeGraph, load_native
from ray_pipeline.train import driver

from ..conftest import BENCHMARKS, CONFIGS, SMOKE_OVERRIDES

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def graph_run(smoke_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("graphruns")
    shutil.copytree(smoke_run.run, root / "smoke")  # the smoke run itself stays as its tests expect it
    args = [str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=smoke", *SMOKE_OVERRIDES,
            "train.models=[graph]", "train.graph.optim.epochs=2", "train.graph.hidden=16", "train.graph.rounds=2"]
    assert main(["run", *args, "--stages", "train"]) == 0
    return RunPaths.of(root, "smoke"), args


def test_the_train_stage_trains_the_graph_scorer_on_its_families(graph_run):
    paths, _ = graph_run
    spec = json.loads((paths.model("graph") / "model.json").read_text())
    assert spec["kind"] == "graph" and spec["graph_version"] == "graph-1" and spec["scores"] == "binary"
    assert spec["summary"]["epochs_run"] == 2 and np.isfinite(spec["summary"]["best"]["val_log_regret"])
    test = json.loads((paths.models / "train_summary.json").read_text())["test"]["graph"]
    rb_test = ds_lib.read_states(paths.dataset, "test").filter(
        pc.equal(ds_lib.read_states(paths.dataset, "test")["family"], "rb"))
    assert test["families"] == ["rb"] and test["n"] == rb_test.num_rows > 0
    assert 0.0 <= test["top1"] <= 1.0
    # the core's own evaluation of it, written once it matched PyTorch on live search states
    native = spec["summary"]["native"]
    assert native["file"] == "model.native.npz" and native["states"] >= 8 and native["max_abs_diff"] <= 1e-4
    g = load_native(paths.model("graph") / "model.native.npz")
    assert isinstance(g, NativeGraph) and g.params == spec["summary"]["params"]
    assert json.loads(g.meta["learned_setting"])["families"] == ["rb"]


def test_the_search_hands_the_model_the_graph_it_was_trained_on(graph_run):
    """A test state's scores from the dataset path (replayed, checked and batched graph arrays) equal the scores of
    the call a live search makes at that state: a learned search that keeps dom/wdeg's choices (margin too wide
    to overrule it) and calls the model at every depth passes through the stored state, and its callback builds
    the graph from the live solver's domains and weights."""
    paths, args = graph_run
    cfg = load_config(CONFIGS / "quick.yaml", args[1:])
    k_max = ds_lib.read_manifest(paths.dataset)["top_k"]
    table = ds_lib.read_states(paths.dataset, "test")
    table = table.filter(pc.is_in(table["family"], value_set=pa.array(["rb"])))
    instances, n_max = driver.graph_inputs(paths.dataset, ["rb"], "test")
    rows = table.to_pylist()
    r = max(rows, key=lambda r: r["decision"])  # the deepest: weights have moved, many constraints are closed
    row = table.slice(rows.index(r), 1)
    a = ds_lib.to_arrays(row, k_max)
    a.update(graph_arrays(row, instances, cfg.data.trace, k_max, n_max))
    model, _ = model_io.load(paths.model("graph"))
    kind = kind_of("graph")
    with torch.inference_mode():
        offline = kind.batch_scores(model, {k: torch.from_numpy(v) for k, v in a.items()})[0, : r["n_cands"]].numpy()

    inst = steps.loads(instances[r["instance_id"]], r["instance_id"])
    scorer = model_io.load_scorer_pt(paths.model("graph") / "model.pt")
    live = []
    real = scorer.score_state

    native = load_native(paths.model("graph") / "model.native.npz")

    def spy(solver, cands, x):
        out = real(solver, cands, x)
        live.append((solver.dom, list(solver.weights), list(cands), out, native.score_solver(solver, cands, x)))
        return out

    scorer.score_state = spy
    Solver(inst, heuristic="learned", scorer=scorer, top_k=k_max, max_depth=None, min_margin=1e9,
           node_limit=r["decision"] + 1).solve()
    dom, weights, _ = steps.replay_states(inst, compile_instance(inst), [r["decision"]], cfg.data.trace)[r["decision"]]
    hits = [(scores, nat) for d, w, c, scores, nat in live
            if d == dom and w == list(weights) and c == list(r["candidates"])]
    assert len(live) > r["decision"] // 2 and hits, "the live search never reached the stored state"
    np.testing.assert_allclose(hits[0][0], offline, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hits[0][1], offline, rtol=1e-4, atol=1e-5)  # the core's graph and network
    assert np.ptp(offline) > 0  # a model that ignored its inputs would pass the equality with constant scores
    assert sum(w > 1 for w in weights) > 0  # a state past some failures: the weights are part of what matched

    res = Solver(inst, heuristic="learned", scorer=scorer, top_k=k_max, max_depth=0, node_limit=20000).solve()
    assert res.status in ("SAT", "UNSAT") and res.stats.model_time_s > 0
    with pytest.raises(model_io.ModelError, match="solver's state"):
        scorer(np.zeros((2, 34), np.float32))


def test_bench_learned_runs_the_graph_scorer(graph_run, capsys):
    """From PyTorch (model.pt) and in the core (model.native.npz): the same searches."""
    paths, args = graph_run
    got = {}
    for name in ("model.pt", "model.native.npz"):
        model = paths.model("graph") / name
        assert main(["bench", "learned", *args, "--model", str(model), "--size", "small", "--count", "3",
                     "--top-k", "4", "--max-depth", "1", "--min-margin", "0", "--repeats", "1", "--workers", "1"]) == 0
        out = json.loads(capsys.readouterr().out)
        r = got[name] = out["results"]["learned k=4 d=1 m=0"]
        assert out["model"] == str(model) and r["solved"] == r["compared"] == 3 and r["model_calls"] >= 3
    for key in ("median_nodes", "geomean_node_ratio", "model_calls"):
        assert got["model.pt"][key] == got["model.native.npz"][key], key


def test_what_the_graph_scorer_refuses(graph_run, tmp_path, capsys):
    paths, args = graph_run
    d = tmp_path / "graph"
    shutil.copytree(paths.model("graph"), d)
    spec = json.loads((d / "model.json").read_text())
    spec["graph_version"] = "graph-0"
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(model_io.ModelError, match="built for graph 'graph-0'"):
        model_io.load_scorer_pt(d / "model.pt")
    assert main(["run", *args[:-3], "train.graph.families=[rb, ksat]", "--stages", "train"]) == 2
    assert "train.graph.families" in capsys.readouterr().err
    model = paths.model("graph") / "model.pt"
    assert main(["bench", "learned", *args, "--model", str(model), "--family", "ksat", "--size", "small",
                 "--count", "1", "--workers", "1"]) == 2
    assert "a graph scorer reads binary constraints only; --family ksat has clauses" in capsys.readouterr().err
    native = paths.model("graph") / "model.native.npz"
    assert main(["bench", "learned", *args, "--model", str(native), "--family", "ksat", "--size", "small",
                 "--count", "1", "--workers", "1"]) == 2
    assert "a graph scorer reads binary constraints only; --family ksat has clauses" in capsys.readouterr().err
    cnf = BENCHMARKS / "sat" / "uf20-01.cnf"  # `solve` names the model and the reason, no traceback
    assert main(["solve", str(cnf), "--heuristic", "learned", "--model", str(native)]) == 2
    err = capsys.readouterr().err
    assert f"error: {native}: " in err and "clauses" in err, err


def test_the_evaluate_stage_runs_the_graph_scorer_when_it_is_the_learned_model(graph_run, capsys):
    """evaluate.learned.model=graph: the export stage stores the evaluated setting in the graph scorer's files
    (the arrays unchanged), the evaluate stage runs the core's graph network on the instances and the report
    names it; an instance with clauses is refused before any task, named. (Last in this module: it re-runs the
    copied run's later stages.)"""
    paths, args = graph_run
    full = [a if a != "train.models=[graph]" else "train.models=[teacher, student, cost, graph]" for a in args]
    col = f"{BENCHMARKS}/col/myciel6.col:7"
    native = paths.model("graph") / "model.native.npz"
    before = load_native(native).arrays
    assert main(["run", *full, "evaluate.learned.model=graph", "evaluate.learned.max_depth=1", "evaluate.splits=[]",
                 f"evaluate.files=[{col}]", "--stages", "train,export,evaluate,report"]) == 0
    g = load_native(native)
    stored = json.loads(g.meta["learned_setting"])
    assert stored["max_depth"] == 1 and stored["families"] == ["rb"]
    assert json.loads((paths.model("graph") / "model.json").read_text())["learned_setting"] == stored
    for k, v in before.items():  # only the metadata changed
        if k != "learned_setting":
            np.testing.assert_array_equal(g.arrays[k], v)
    ev = json.loads((paths.evaluation / "evaluation.json").read_text())["speedup"]
    assert ev["learned"]["model"] == str(native) and ev["learned"]["max_depth"] == 1
    assert ev["summary"]["external"]["learned"]["solved"] == 1
    rows = [r for r in json.loads((paths.evaluation / "speedup_rows.json").read_text()) if r["heuristic"] == "learned"]
    assert len(rows) == 1 and rows[0]["model_calls"] > 0
    report = (paths.reports / "report.md").read_text()
    assert "learned = graph via the solver core's graph network (model.native.npz)" in report
    assert "| graph (families: rb) |" in report
    # the Control Center lists it beside the pipeline's models, with the file the core runs
    from ray_pipeline.ui import app as ui_app, runs as ui_runs
    info = ui_runs.run_info(paths.run.parent, paths.run.name)
    g = next(m for m in info["models"] if m["name"] == "graph")
    assert g["deploy"] == "model.native.npz" and g["params"] > 0 and 0 <= g["top1"] <= 1
    assert info["learned_model"] == "graph/model.native.npz"
    assert "data-model='graph'" in ui_app._model_rows(info)

    cnf = f"{BENCHMARKS}/sat/uf20-01.cnf"
    assert main(["run", *full, "evaluate.learned.model=graph", "evaluate.splits=[]", f"evaluate.files=[{col}, {cnf}]",
                 "--stages", "evaluate"]) != 0
    err = capsys.readouterr().err
    assert "reads binary constraints only" in err and "uf20-01.cnf (evaluate.files)" in err, err
