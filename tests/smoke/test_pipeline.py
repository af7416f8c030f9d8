"""The whole pipeline on a tiny config, on the session's Ray: one run, many assertions on what it wrote."""
import json
import statistics
import sqlite3

import numpy as np
import pytest

from ray_pipeline.cli import main
from ray_pipeline.models import io as model_io

from ..conftest import BENCHMARKS, CONFIGS, SMOKE_OVERRIDES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = SMOKE_OVERRIDES


@pytest.fixture(scope="module")
def run_dir(smoke_run):
    return smoke_run  # built once per session (tests/conftest.py): the web app's tests read the same run


def test_every_stage_finished_and_wrote_its_artifacts(run_dir):
    m = json.loads(run_dir.manifest.read_text())
    assert {s for s, v in m["stages"].items() if v["status"] == "done"} == {"generate", "train", "export",
                                                                            "evaluate", "report"}
    for kind in ("teacher", "student", "cost"):
        d = run_dir.model(kind)
        for f in ("model.pt", "model.json", "model.onnx", "card.md", "metrics.json", "metrics.csv", "curves.png"):
            assert (d / f).stat().st_size > 0, (kind, f)
    assert (run_dir.model("student") / "model.int8.onnx").exists()
    rep = (run_dir.reports / "report.md").read_text()
    assert "Solver speedup" in rep and "| heldout | learned |" in rep and "onnx-int8" in rep
    # the export deploys the native MLP (it matched ONNX Runtime FP32 on every test row, see export_summary)
    assert "learned = student via the solver core's native MLP (model.native.npz)" in rep
    assert "ray-pipeline bench heldout" in rep
    assert "## Models (test split, families: rb, ksat)" in rep  # quick.yaml trains on train.families: [rb, ksat]
    metrics = json.loads((run_dir.reports / "metrics.json").read_text())
    assert "learned" in metrics["speedup"]["heldout"] and metrics["export"]["student"]["variants"]


def test_student_is_small_and_checks_pass(run_dir):
    summary = json.loads((run_dir.models / "train_summary.json").read_text())
    assert summary["student"]["params"] <= 0.1 * summary["teacher"]["params"]
    for kind in ("teacher", "student"):  # the reported test top-1 is what the saved model scores on the test split
        reported = summary["test"][kind]
        hits, n = _recomputed_test_hits(run_dir, kind, families=["rb", "ksat"])  # quick.yaml: train.families
        assert reported["n"] == n > 0 and round(reported["top1"] * n) == hits, (kind, reported, hits, n)
    ev = json.loads((run_dir.evaluation / "evaluation.json").read_text())
    failed = [c["name"] for k in ("teacher", "student") for c in ev["checks"][k] if not c["passed"]]
    assert not failed, failed
    # T is fitted on validation: there it cannot do worse than T = 1 (on a tiny test split it may)
    cal = ev["calibration"]
    assert cal["val_top1_log_loss"]["after"] <= cal["val_top1_log_loss"]["before"] + 1e-4
    n_test = ev["ranking"]["student"]["test"]["all"]["n"]
    # calibrated on its training families' states (quick.yaml: rb, ksat); the smoke data's coloring states apart
    assert cal["families"] == ["rb", "ksat"] and 0 < cal["test_states"] <= n_test
    assert ("other_families_after" in cal) == (cal["test_states"] < n_test)
    assert cal["after"]["temperature"] > 0 and 0 < cal["after"]["unique_best_states"] <= cal["test_states"]
    _assert_suggestions_quote_measured_figures(run_dir, ev)
    sp = ev["speedup"]["summary"]
    assert set(sp) == {"test", "heldout", "external"}
    for split in sp:  # every baseline ran on every instance
        assert {"lex", "mrv", "dom-deg", "dom-wdeg", "learned"} <= set(sp[split])
    assert sp["external"]["dom-wdeg"]["solved"] == 2
    # the external files per family and file group (uf20-01.cnf -> cnf/uf20), as the report's table shows them
    groups = ev["speedup"]["groups"]["external"]
    assert set(groups) == {"cnf", "cnf/uf20", "col", "col/myciel6"}
    assert groups["cnf/uf20"]["learned"]["solved"] == groups["col/myciel6"]["learned"]["solved"] == 1
    report = (run_dir.reports / "report.md").read_text()
    assert "| external | cnf/uf20 | 1 | 1/1 |" in report and "| external | col/myciel6 | 1 | 1/1 |" in report


def test_expert_ran_on_the_first_instances_of_each_split_beside_the_learned_heuristic(run_dir, capsys):
    """evaluate.expert.max_instances=2 (SMOKE_OVERRIDES): the expert probed on the first 2 instances of each
    split, its probes counted apart from its nodes; the report and the console show it beside learned; bench
    heldout --expert reproduces its trees."""
    rows = json.loads((run_dir.evaluation / "speedup_rows.json").read_text())
    ev = json.loads((run_dir.evaluation / "evaluation.json").read_text())["speedup"]
    for split in ev["summary"]:
        names = list(dict.fromkeys(r["instance"] for r in rows if r["split"] == split))
        expert = [r for r in rows if r["split"] == split and r["heuristic"] == "expert"]
        assert [r["instance"] for r in expert] == names[:2]
        assert all(r["probes"] > 0 and r["probe_nodes"] > 0 and r["status"] != "UNKNOWN" for r in expert)
        assert ev["summary"][split]["expert"]["of"] == 2
        assert ev["expert_subset"][split]["instances"] == 2 and "learned" in ev["expert_subset"][split]
    assert all(r["probes"] == 0 for r in rows if r["heuristic"] != "expert")
    assert ev["expert"] == {"top_k": 8, "max_depth": 1, "probe_budget": 300, "max_instances": 2}
    report = (run_dir.reports / "report.md").read_text()
    assert "expert = the labeller run online" in report and "the 2 instances the expert ran on" in report
    assert main(["bench", "heldout", str(CONFIGS / "quick.yaml"), f"run.root={run_dir.run.parent}", "run.name=smoke",
                 *TINY, "--size", "medium", "--count", "2", "--repeats", "1", "--workers", "1", "--expert"]) == 0
    out = json.loads(capsys.readouterr().out)
    heldout = {r["instance"]: r["nodes"] for r in rows if r["split"] == "heldout" and r["heuristic"] == "expert"}
    assert out["expert"]["probe_budget"] == 300 and out["results"]["expert"]["compared"] == 2
    assert len(heldout) == 2 and out["results"]["expert"]["median_nodes"] == statistics.median(heldout.values())


def _recomputed_test_hits(run_dir, kind, families) -> tuple[int, int]:
    """Top-1 hits counted state by state, straight from the test Parquet file and the saved model: the chosen
    candidate (highest score) is a hit when no other candidate of the state was cheaper to finish."""
    import pyarrow.parquet as pq
    import torch

    k_max = json.loads((run_dir.dataset / "manifest.json").read_text())["top_k"]
    model, _ = model_io.load(run_dir.model(kind))
    hits = n = 0
    for r in pq.read_table(run_dir.dataset / "states_test.parquet").to_pylist():
        if r["family"] not in families:
            continue
        k = min(r["n_cands"], k_max)
        x = torch.tensor(np.asarray(r["features"][:k], dtype=np.float32)[None])
        with torch.inference_mode():
            scores = model(x, torch.ones(1, k, dtype=torch.bool))[0].numpy()
        costs = np.asarray(r["costs"][:k])
        hits += int(costs[int(np.argmax(scores))] == costs.min())
        n += 1
    return hits, n


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield float(obj)


def _assert_suggestions_quote_measured_figures(run_dir, ev):
    """Each suggestion cites a figure this run measured (evaluation.json, or the student's best validation
    metrics); the catch-all line appears only alone and only when the first rule (student not above dom/wdeg)
    stays silent."""
    import re

    best = json.loads((run_dir.model("student") / "model.json").read_text())["summary"]["best"]
    measured = list(_numbers({k: v for k, v in ev.items() if k != "suggestions"})) + list(_numbers(best))
    figures = {f"{v:.3f}" for v in measured} | {f"{v:.2f}" for v in measured}
    assert ev["suggestions"]
    for text in ev["suggestions"]:
        if text.startswith("No group stands out"):
            st = ev["ranking"]["student"]["test"]["all"]
            assert ev["suggestions"] == [text] and st["top1"] > st["baseline_top1"] + 0.01
            continue
        quoted = re.findall(r"(?<![\d.])\d+\.\d{2,3}(?!\d)", text)
        assert quoted and set(quoted) <= figures, (text, quoted)


def test_training_histories_and_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for kind, key in (("teacher", "val_top1"), ("student", "val_top1"), ("cost", "val_log_nodes_rmse")):
        hist = json.loads((run_dir.model(kind) / "metrics.json").read_text())["history"]
        assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1)) and len(hist) >= 1
        assert all(np.isfinite(h["train_loss"]) and key in h and h["samples_per_s"] > 0 for h in hist)
        acc = EventAccumulator(str(run_dir.tensorboard / kind))
        acc.Reload()
        assert key in acc.Tags()["scalars"]


def test_rerun_skips_every_stage(run_dir, capsys):
    assert main(["run", str(CONFIGS / "quick.yaml"), f"run.root={run_dir.run.parent}", "run.name=smoke", *TINY]) == 0
    out = capsys.readouterr().out
    assert "generate skipped, train skipped, export skipped, evaluate skipped" in out


def test_solve_cli_with_the_exported_student(run_dir, capsys):
    model = run_dir.model("student") / "model.onnx"
    for path, extra in ((BENCHMARKS / "sat" / "uf50-01.cnf", []), (BENCHMARKS / "col" / "jean.col", ["--colors", "10"]),
                        (BENCHMARKS / "sat" / "uuf50-01.cnf", [])):
        for m in (model, run_dir.model("student") / "model.int8.onnx"):
            code = main(["solve", str(path), "--heuristic", "learned", "--model", str(m), "--json", *extra])
            out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert code == 0 and out["stats"]["model_calls"] >= 1
            assert out["status"] == ("UNSAT" if path.name.startswith("uuf") else "SAT")


def test_student_workers_distil_from_the_teachers_own_scores(run_dir):
    """A student's Train workers add `t_teacher` to their batches themselves (no soft-label pass): the column must
    be exactly what the trained teacher scores on those rows, padded candidates masked as the teacher masks them."""
    import torch

    from ray_pipeline.config import load_config
    from ray_pipeline.data import dataset as ds_lib
    from ray_pipeline.models import io as model_io
    from ray_pipeline.train import driver
    from ray_pipeline.train.loop import _teacher_logits

    cfg = load_config(CONFIGS / "quick.yaml", [])
    spec = json.loads((run_dir.model("student") / "model.json").read_text())
    section = driver.model_section(cfg, "student")
    c = driver.loop_config(cfg, run_dir, "student", section, spec, run_dir.run / "unused",
                           driver.teacher_files(cfg, run_dir, {"teacher": 1.0}))
    a = ds_lib.to_arrays(ds_lib.read_states(run_dir.dataset, "val"), ds_lib.read_manifest(run_dir.dataset)["top_k"])
    batch = {"x": torch.from_numpy(a["x"]), "mask": torch.from_numpy(a["mask"])}
    got = _teacher_logits(c)(dict(batch))["t_teacher"]
    teacher, _ = model_io.load(run_dir.model("teacher"))
    with torch.inference_mode():
        want = teacher(batch["x"], batch["mask"])
    assert len(a["x"]) > 0 and torch.equal(got, want)
    assert not torch.equal(got, teacher(batch["x"], torch.ones_like(batch["mask"])))  # the mask matters
    with pytest.raises(model_io.ModelError, match="no trained model"):
        driver.teacher_files(cfg, run_dir, {"nope": 1.0})
    # a listwise student never distils from this binary teacher (quick.yaml: train.target binary): sigmoid logits
    # are not softmax logits
    assert spec["scores"] == "binary"
    listwise = cfg.model_copy(update={"train": cfg.train.model_copy(update={"target": "soft"})})
    with pytest.raises(model_io.ModelError, match="teacher 'teacher' has binary scores.*train.target=soft"):
        driver.teacher_files(listwise, run_dir, {"teacher": 1.0})


def test_each_train_target_labels_the_states_as_it_says(run_dir):
    """train.target on real dataset rows: best = uniform over the tied-best, soft = a distribution over all valid
    candidates, binary = 1 on every tied-best candidate and 0 elsewhere (padding included)."""
    from ray_pipeline.data import dataset as ds_lib
    from ray_pipeline.train import driver

    t = ds_lib.read_states(run_dir.dataset, "val")
    k = ds_lib.read_manifest(run_dir.dataset)["top_k"]
    out = {target: driver._pad_batch(t, k, target, 0.5, None) for target in ("best", "soft", "binary")}
    tied, mask = out["best"]["target"] > 0, out["best"]["mask"]
    assert len(tied) > 0 and (tied.sum(axis=1) >= 1).all() and (tied.sum(axis=1) > 1).any()  # ties do occur
    assert np.array_equal(out["binary"]["label"], tied.astype(np.float32))
    assert np.array_equal(out["best"]["label"], out["best"]["target"])
    for target in ("best", "soft"):
        assert np.allclose(out[target]["label"].sum(axis=1), 1.0) and (out[target]["label"][~mask] == 0).all()
    assert (out["soft"]["label"][mask & ~tied] > 0).any()  # soft gives the others some mass, best none


def test_teacher_and_student_onnx_score_like_their_pytorch_models(run_dir):
    """Either model can run the learned heuristic through ONNX Runtime (evaluate.learned.model): the teacher's
    file takes a candidate set and a mask, the student's candidate rows; both take one state's raw features."""
    from ray_pipeline.features import N_INPUT
    from ray_pipeline.inference import OnnxScorer, load_scorer

    x = np.random.default_rng(0).normal(size=(7, N_INPUT)).astype(np.float32)
    for kind in ("teacher", "student"):
        onnx_scorer = OnnxScorer(run_dir.model(kind) / "model.onnx")
        assert onnx_scorer.is_set == (kind == "teacher")
        np.testing.assert_allclose(onnx_scorer(x), load_scorer(run_dir.model(kind) / "model.pt")(x), atol=1e-4)
        assert onnx_scorer(x[:3]).shape == (3,)


def test_bench_heldout_reproduces_the_evaluate_stage_and_extends_it(run_dir, capsys, tmp_path):
    """Same instances, same setting, same limits as the run's evaluate stage: same node counts (searches are
    deterministic), and one more held-out instance of the same kind beyond the run's two."""
    rows_file = tmp_path / "rows.json"
    args = ["bench", "heldout", str(CONFIGS / "quick.yaml"), f"run.root={run_dir.run.parent}", "run.name=smoke",
            *TINY, "--size", "medium", "--count", "3", "--repeats", "1", "--workers", "1", "--rows", str(rows_file)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["node_limit"] == 5000 and out["learned"]["max_depth"] == 0
    res = out["results"]
    assert res["instances"] == 3 and {"dom-wdeg", "dom-deg", "learned"} <= set(res)
    assert res["learned"]["model_calls"] > 0 and len(res["learned"]["geomean_node_ratio_ci95"]) == 2
    mine = {(r["instance"], r["heuristic"]): r for r in json.loads(rows_file.read_text())}
    evaluated = [r for r in json.loads((run_dir.evaluation / "speedup_rows.json").read_text())
                 if r["split"] == "heldout" and r["heuristic"] in ("dom-wdeg", "dom-deg", "learned")]
    assert len(evaluated) == 6
    for r in evaluated:
        assert (mine[(r["instance"], r["heuristic"])]["nodes"], mine[(r["instance"], r["heuristic"])]["status"]) == \
            (r["nodes"], r["status"]), r["instance"]
    assert len({i for i, _ in mine} - {r["instance"] for r in evaluated}) == 1
    assert main([*args[:-2], "--rows", str(tmp_path / "no" / "rows.json")]) == 2
    assert "no such directory" in capsys.readouterr().err
    # a size the config does not hold out is built the same way, and the JSON says none of it is the run's
    assert main([*args[:-6], "--size", "large", "--count", "1"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["in_config_heldout"] is False and out["results"]["instances"] == 1
    assert out["note"].startswith("rb/large is not in data.generate.heldout") and "trained on: small" in out["note"]
    assert "note: rb/large is not in data.generate.heldout" in captured.err


def test_bench_learned_tunes_on_instances_outside_train_and_heldout(run_dir, capsys):
    # the file the evaluate stage runs: the one the export stage deployed (native MLP, else FP32 ONNX)
    deployed = json.loads((run_dir.models / "export_summary.json").read_text())["student"]["deploy"]
    model = run_dir.model("student") / deployed
    args = ["bench", "learned", str(CONFIGS / "quick.yaml"), f"run.root={run_dir.run.parent}", "run.name=smoke",
            "--size", "small", "--count", "2", "--top-k", "2,4", "--max-depth", "0", "--min-margin", "0,1000", "--repeats", "1",
            "--workers", "1"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(model) and out["tuning_index_offset"] > 1_000_000  # above the held-out indices
    res = out["results"]
    settings = {f"learned k={k} d=0 m={m}" for k in (2, 4) for m in (0, 1000)}
    assert set(res) == {"instances", "dom-wdeg"} | settings and res["instances"] == 2
    assert res["dom-wdeg"]["geomean_node_ratio"] == 1.0 and res["dom-wdeg"]["model_calls"] == 0
    for name in settings:
        r = res[name]
        assert r["solved"] == r["compared"] == 2 and r["model_calls"] >= 2 and 0 < r["inference_share"] < 1
        if name.endswith("m=1000"):  # no score gap is that wide: dom/wdeg's choice everywhere, same trees
            assert r["node_ties"] == 2 and r["geomean_node_ratio"] == 1.0
    assert out["best_by_time"] in res
    assert main([*args[:-2], "--model", str(run_dir.run / "missing.onnx")]) == 2
    assert "missing.onnx: no such model file" in capsys.readouterr().err
    assert main([*args, "--top-k", "8,x"]) == 2
    assert "--top-k takes comma-separated ints, got '8,x'" in capsys.readouterr().err


def test_registry_lists_the_models_and_the_run(run_dir):
    with sqlite3.connect(run_dir.run.parent / "registry.sqlite") as db:
        rows = db.execute("SELECT name, dataset_hash, onnx_bytes, deploy FROM models WHERE run='smoke'").fetchall()
        runs = db.execute("SELECT run FROM runs").fetchall()
    assert {r[0] for r in rows} == {"teacher", "student", "cost"} and all(r[1] and r[2] for r in rows)
    assert ("smoke",) in runs


def test_models_refuse_another_dataset_or_feature_version(run_dir, tmp_path):
    import shutil

    d = tmp_path / "student"
    shutil.copytree(run_dir.model("student"), d)
    spec = json.loads((d / "model.json").read_text())
    with pytest.raises(model_io.ModelError, match="dataset_hash"):
        model_io.load(d, expect={"dataset_hash": "0" * 16})
    spec["feature_version"] = "v0"
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(model_io.ModelError, match="model.json: built for features 'v0'"):
        model_io.load(d)
    (d / "model.pt").write_bytes(b"not a zip")
    spec["feature_version"] = model_io.FEATURE_VERSION
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(model_io.ModelError, match="model.pt: cannot load as a weights-only state dict"):
        model_io.load(d)


def test_fresh_calibration_labels_as_generate_does_and_the_bench_reproduces_the_stage(run_dir, capsys):
    """ECE on fresh instances of the training mix (evaluate/fresh.py): each is labelled exactly as the generate
    stage labels an original; the evaluate stage measured it on 1 x the mix; `bench calibration` with the same
    copies gives the same figures, and fails by name without an evaluated run."""
    from ray_pipeline.config import load_config
    from ray_pipeline.data import dataset as ds_lib
    from ray_pipeline.data.steps import CALIBRATION_INDEX_OFFSET, instance_specs
    from ray_pipeline.evaluate import fresh

    cfg = load_config(CONFIGS / "quick.yaml", [f"run.root={run_dir.run.parent}", "run.name=smoke", *TINY])
    # an original of the run's own (index 0), built the fresh way: the same states, features and costs
    mine = {s["state_id"]: s for s in fresh.label_fresh([("rb", "small", 0, cfg.run.seed, {})], cfg.data)}
    theirs = [r for sp in ("train", "val", "test") for r in ds_lib.read_states(run_dir.dataset, sp).to_pylist()
              if r["instance_id"] == "rb-small-0000000"]
    assert theirs and set(mine) == {r["state_id"] for r in theirs}
    for r in theirs:
        np.testing.assert_allclose(np.asarray(mine[r["state_id"]]["features"], np.float32).ravel(),
                                   np.asarray(r["features"], np.float32).ravel())
        assert mine[r["state_id"]]["costs"] == list(r["costs"])
    # the fresh mix: train.families' entries only (rb 6 + ksat 3; no coloring), each the generate stage's own
    # spec (family, size, seed, knobs) at an index shifted past every other index; none is an instance of the run
    specs = fresh.fresh_specs(cfg, 2)
    assert len(specs) == 18 and {s[0] for s in specs} == {"rb", "ksat"}
    own = {(sp["family"], sp["size"], sp["index"]): sp for sp in instance_specs(cfg.data, cfg.run.seed)
           if not sp["heldout"] and not sp["aug"]}
    count = {fs.family: fs.count for fs in cfg.data.generate.families}
    for family, size, index, seed, params in specs:
        sp = own[(family, size, (index - CALIBRATION_INDEX_OFFSET) % count[family])]
        assert (seed, params) == (sp["base_seed"], json.loads(sp["params_json"])) and index >= CALIBRATION_INDEX_OFFSET
    built = set(ds_lib.read_table(run_dir.dataset, "instances.parquet", columns=["base_id"])["base_id"].to_pylist())
    assert not built & {f"{f}-{z}-{i:07d}" for f, z, i, _, _ in specs}
    cal = json.loads((run_dir.evaluation / "evaluation.json").read_text())["calibration"]
    fr = cal["fresh"]
    assert fr["copies"] == 1 and fr["instances_built"] == 9 and 0 < fr["instances"] <= 9 and fr["states"] > 0
    assert fr["after"]["temperature"] == cal["after"]["temperature"] and 0 <= fr["after"]["ece"] <= 1
    assert set(fr["by_group"]) <= {"rb/small", "ksat/small"}
    assert sum(g["states"] for g in fr["by_group"].values()) == fr["states"]
    assert "fresh instances of the training mix" in (run_dir.reports / "report.md").read_text()
    args = ["bench", "calibration", str(CONFIGS / "quick.yaml"), f"run.root={run_dir.run.parent}", "run.name=smoke",
            *TINY, "--copies", "1", "--workers", "1"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["temperature"] == cal["after"]["temperature"] and out["instances_built"] == 9
    stage = {k: v for k, v in fr.items() if k not in ("copies", "instances_built")}
    assert json.dumps(out["fresh"], sort_keys=True) == json.dumps(stage, sort_keys=True)
    # another mix than the run's (another seed) is refused: T belongs to the run's own
    assert main([*args, "run.seed=5"]) == 2
    assert "differs from the config run 'smoke' was built with" in capsys.readouterr().err
    assert main([*args[:4], "run.name=never-ran", *args[5:]]) == 2
    assert "evaluation.json: no such file" in capsys.readouterr().err
