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
from ray_pipeline.train import driver

from ..conftest import CONFIGS, SMOKE_OVERRIDES

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


def test_the_search_hands_the_model_the_graph_it_was_trained_on(graph_run):
    """A test state's scores from the dataset path (replayed graph arrays, batched) equal the scores the solver's
    callback gets at that state (the graph built from the live solver's domains and weights)."""
    paths, args = graph_run
    cfg = load_config(CONFIGS / "quick.yaml", args[1:])
    table = ds_lib.read_states(paths.dataset, "test")
    table = table.filter(pc.is_in(table["family"], value_set=pa.array(["rb"])))
    instances, n_max = driver.graph_inputs(paths.dataset, ["rb"])
    row = table.slice(0, 1)
    a = ds_lib.to_arrays(row, 6)
    a.update(graph_arrays(row, instances, cfg.data.trace, 6, n_max))
    model, _ = model_io.load(paths.model("graph"))
    kind = kind_of("graph")
    with torch.inference_mode():
        batch = {k: torch.from_numpy(v) for k, v in a.items()}
        offline = kind.batch_scores(model, batch)[0, : int(a["mask"].sum())].numpy()

    r = row.to_pylist()[0]
    inst = steps.loads(instances[r["instance_id"]], r["instance_id"])
    compiled = compile_instance(inst)
    dom, weights, depth = steps.replay_states(inst, compiled, [r["decision"]], cfg.data.trace)[r["decision"]]
    scorer = model_io.load_scorer_pt(paths.model("graph") / "model.pt")
    s = Solver(inst, heuristic="dom-wdeg", domains=dom, weights=weights, compiled=compiled)
    online = scorer.score_state(s, list(r["candidates"]), s.features(list(r["candidates"]), depth))
    np.testing.assert_allclose(online, offline, rtol=1e-4, atol=1e-5)
    assert np.ptp(online) > 0  # a model that ignored its inputs would pass the equality with constant scores

    # in a search: every call of the learned heuristic reaches score_state, and the search finishes
    calls = []
    real = scorer.score_state
    scorer.score_state = lambda solver, cands, x: calls.append(len(cands)) or real(solver, cands, x)
    res = Solver(inst, heuristic="learned", scorer=scorer, top_k=6, max_depth=0, node_limit=20000).solve()
    assert res.status in ("SAT", "UNSAT") and calls and res.stats.model_time_s > 0
    with pytest.raises(model_io.ModelError, match="solver's state"):
        scorer(np.zeros((2, 34), np.float32))


def test_bench_learned_runs_the_graph_scorer(graph_run, capsys):
    paths, args = graph_run
    model = paths.model("graph") / "model.pt"
    assert main(["bench", "learned", *args, "--model", str(model), "--size", "small", "--count", "2",
                 "--top-k", "4", "--max-depth", "0", "--min-margin", "0", "--repeats", "1", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["results"]["learned k=4 d=0 m=0"]
    assert out["model"] == str(model) and r["solved"] == r["compared"] == 2 and r["model_calls"] >= 2


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
