"""Run directory, manifest and resume logic, with small in-memory stages."""
import json

import pytest

from ray_pipeline import atomic
from ray_pipeline.config import load_config
from ray_pipeline.manifest import Manifest, ManifestError
from ray_pipeline.paths import RunPaths
from ray_pipeline.pipeline import StageContext, StageFailed, StageResult, StageSpec, run_stages

from ..conftest import CONFIGS


def _specs(calls, fail=()):
    def make(name, value_key):
        def run(ctx):
            calls.append(name)
            if name in fail:
                raise RuntimeError(f"{name} exploded")
            out = ctx.paths.run / f"{name}.txt"
            atomic.write_text(out, str(value_key(ctx)))
            return StageResult({"file": str(out)}, atomic.hash_tree(out))
        return run

    return {
        "generate": StageSpec("generate", ("data",), (), make("generate", lambda c: c.cfg.data.augment.factor)),
        "train": StageSpec("train", ("train",), ("generate",), make("train", lambda c: c.cfg.train.num_workers)),
    }


def _ctx(tmp_runs, overrides=(), force=False):
    cfg = load_config(CONFIGS / "quick.yaml", [f"run.root={tmp_runs}", *overrides])
    paths = RunPaths.of(cfg.run.root, cfg.run.name)
    return StageContext(cfg, paths, Manifest.open(paths.manifest, cfg), force)


def test_resume_skips_current_stages_and_reruns_changed_ones(tmp_runs):
    calls = []
    assert run_stages(_ctx(tmp_runs), ["generate", "train"], _specs(calls)) == {"generate": "ran", "train": "ran"}
    assert run_stages(_ctx(tmp_runs), ["generate", "train"], _specs(calls)) == {"generate": "skipped",
                                                                                "train": "skipped"}
    # a train-only change reruns train only
    out = run_stages(_ctx(tmp_runs, ["train.num_workers=1"]), ["generate", "train"], _specs(calls))
    assert out == {"generate": "skipped", "train": "ran"}
    # a data change whose output changes reruns both (train's input hash moved)
    out = run_stages(_ctx(tmp_runs, ["train.num_workers=1", "data.augment.factor=3"]), ["generate", "train"],
                     _specs(calls))
    assert out == {"generate": "ran", "train": "ran"}
    out = run_stages(_ctx(tmp_runs, ["train.num_workers=1", "data.augment.factor=3"], force=True),
                     ["generate", "train"], _specs(calls))
    assert out == {"generate": "ran", "train": "ran"}
    assert calls.count("generate") == 3 and calls.count("train") == 4


def test_manifest_records_config_versions_and_stage_hashes(tmp_runs):
    ctx = _ctx(tmp_runs)
    run_stages(ctx, ["generate"], _specs([]))
    m = json.loads(ctx.paths.manifest.read_text())
    assert m["config"]["run"]["name"] == "quick" and m["seeds"] == {"base": 0}
    assert m["versions"]["ray"] and m["versions"]["torch"]
    s = m["stages"]["generate"]
    assert s["status"] == "done" and s["config_hash"] == ctx.cfg.section_hash("data")
    assert len(s["output_hash"]) == 16 and s["seconds"] >= 0


def test_failed_stage_is_recorded_and_rerun(tmp_runs):
    calls = []
    with pytest.raises(StageFailed, match="train exploded"):
        run_stages(_ctx(tmp_runs), ["generate", "train"], _specs(calls, fail=("train",)))
    m = Manifest.read(_ctx(tmp_runs).paths.manifest)
    assert m.stage("train")["status"] == "failed" and "exploded" in m.stage("train")["error"]
    assert run_stages(_ctx(tmp_runs), ["generate", "train"], _specs(calls)) == {"generate": "skipped",
                                                                                "train": "ran"}


def test_stage_needs_finished_inputs(tmp_runs):
    with pytest.raises(StageFailed, match="needs 'generate'"):
        run_stages(_ctx(tmp_runs), ["train"], _specs([]))


def test_corrupt_manifest_is_refused_by_name(tmp_runs):
    ctx = _ctx(tmp_runs)
    ctx.paths.manifest.write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json"):
        _ctx(tmp_runs)


def test_atomic_directory_keeps_the_old_result_when_the_new_one_fails(tmp_path):
    target = tmp_path / "data"
    with atomic.directory(target) as d:
        (d / "a.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic.directory(target) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temp leftovers


def test_atomic_file_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "x.json"
    atomic.write_json(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.file(p) as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("stage, files", [("train", ("model.pt",)), ("export", ("model.onnx", "model.int8.onnx",
                                                                                    "model.native.npz"))])
def test_a_change_to_any_model_file_changes_its_stages_output_hash(tmp_path, stage, files):
    """Resume skips a stage whose inputs hash as before: a retrained student (its teacher unchanged) must change
    train's output hash, or export and evaluate would keep the old student's files and figures."""
    import importlib

    from ray_pipeline.kinds import KINDS

    output_hash = importlib.import_module(f"ray_pipeline.{stage}.stage").output_hash
    paths = RunPaths(tmp_path / "run")
    for k in KINDS:
        for name in files:
            atomic.write_text(paths.model(k) / name, f"{k} {name} v1")
    seen = {output_hash(paths)}
    for k in KINDS:  # every model's file counts, not just the first one's
        for name in files:
            atomic.write_text(paths.model(k) / name, f"{k} {name} v2")
            seen.add(output_hash(paths))
    assert len(seen) == 1 + len(KINDS) * len(files)
    (paths.model(list(KINDS)[-1]) / files[0]).unlink()  # a model that disappears changes it too
    assert output_hash(paths) not in seen
