"""A model carries how it was evaluated (ray_pipeline.learned_setting): the export stage's task stores the
learned heuristic's setting in model.json, the ONNX files' metadata and model.native.npz; `ray-pipeline solve
--model` runs with it unless a flag says otherwise; a file exported before the setting was stored still loads,
with the config's defaults and a note.

Real components throughout: a student network (random weights, real-ranged normalisation) goes through the
export stage's own task function (ONNX export, parity, native file, INT8), and the solver runs the files.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_pipeline.cli import main
from ray_pipeline.config import EvaluateSection, ExportSection
from ray_pipeline.errors import ModelError
from ray_pipeline.export import onnx_tools as ot
from ray_pipeline.export.stage import export_one
from ray_pipeline.inference import OnnxScorer, load_for_search
from ray_pipeline.kinds import KINDS
from ray_pipeline.learned_setting import KEY, SOLVER_KEYS, LearnedSetting, choose, defaults, stored_in
from ray_pipeline.models import io as model_io
from ray_pipeline.models.nets import StudentScorer
from ray_pipeline.problems import generate
from ray_pipeline.problems.instance import write_json
from ray_pipeline.solver import Solver
from ray_pipeline.solver.policy import NativeMlp, with_meta
from ray_pipeline.solver.schema import INPUT_FEATURES
from ray_pipeline.storage import pack

F = len(INPUT_FEATURES)
K = 6
# differs from the defaults in every solver setting, so "used the model's" and "used the defaults" differ
SETTING = LearnedSetting(top_k=3, max_depth=1, min_margin=0.25, propagation="fc", families=("rb",))
FILES = ("model.json", "model.pt", "model.onnx", "model.int8.onnx", "model.native.npz")


def _student_dir(d: Path) -> Path:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 2, F).tolist(), rng.uniform(0.2, 3, F).tolist()
    model = StudentScorer(F, 16, 2, 0.0, mean, std).eval()
    spec = model_io.make_spec("student", {"hidden": 16, "layers": 2, "dropout": 0.0}, {"mean": mean, "std": std},
                              train_key="test", dataset_hash="test", seed=0)
    model_io.save(model, spec, d)
    return d


def _rows(n_states: int = 64, seed: int = 1) -> dict[str, np.ndarray]:
    """Candidate sets as the dataset pads them (x, mask, target), some sets shorter than K."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 4, (n_states, K, F)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0.0
    mask = np.arange(K)[None, :] < rng.integers(2, K + 1, n_states)[:, None]
    costs = np.where(mask, rng.integers(1, 20, (n_states, K)), np.inf)
    ties = mask & (costs == costs.min(axis=1, keepdims=True))
    return {"x": x, "mask": mask, "target": (ties / ties.sum(axis=1, keepdims=True)).astype(np.float32)}


def _export(out: Path, setting: str | None) -> Path:
    """The export stage's task on one student, its files written where the driver writes them."""
    src = _student_dir(out.parent / f"{out.name}-src")
    opts = ExportSection(latency_calls=20, parity_rows=64, calibration_rows=32, prune_amounts=[0.5]).model_dump(
        mode="json")
    result, files = export_one("student", pack(src, ("model.pt", "model.json")), _rows(), K, opts, setting)
    out.mkdir()
    (out / "model.pt").write_bytes((src / "model.pt").read_bytes())
    for name, data in files.items():
        (out / name).write_bytes(data)
    assert result["deploy"] == "model.native.npz" and set(FILES) <= {p.name for p in out.iterdir()}
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "student", SETTING.to_text())


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """What an export wrote before models carried their setting: the same files without it."""
    return _export(tmp_path_factory.mktemp("legacy") / "student", None)


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Path:
    return write_json(generate("rb", "medium", 0, 0), tmp_path_factory.mktemp("inst") / "rb.json")


def _solve(capsys, *args: str) -> tuple[dict, str]:
    assert main(["solve", *map(str, args), "--json"]) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out.strip().splitlines()[-1]), cap.err


def _searched(instance: Path, model: Path, **kw) -> dict:
    """The same search run directly through the solver's API."""
    from ray_pipeline.problems.readers import read_instance

    return Solver(read_instance(instance), heuristic="learned", scorer=NativeMlp(model), **kw).solve().stats.to_dict()


# ------------------------------------------------------------------------------------------ the files
def test_the_setting_round_trips_through_every_file_of_the_model(exported):
    assert json.loads((exported / "model.json").read_text())[KEY] == SETTING.model_dump(mode="json")
    for name in ("model.onnx", "model.int8.onnx"):
        assert LearnedSetting.from_text(OnnxScorer(exported / name).meta[KEY], name) == SETTING
    with np.load(exported / "model.native.npz", allow_pickle=False) as z:  # plain arrays: nothing to unpickle
        assert LearnedSetting.from_text(str(z[KEY]), "npz") == SETTING
    for name in FILES[1:]:  # every file a user can hand to `solve --model` (model.pt reads its model.json)
        _, chosen = load_for_search(exported / name)
        assert chosen.stored == SETTING and set(chosen.sources.values()) == {"model"}
        assert chosen.values == {k: getattr(SETTING, k) for k in SOLVER_KEYS}


def test_the_native_file_with_its_setting_is_a_function_of_its_contents(exported, tmp_path):
    model, _ = model_io.load(exported)
    meta = {KEY: SETTING.to_text()}
    a = ot.save_native_mlp(model, KINDS["student"], tmp_path / "a.npz", meta).read_bytes()
    assert a == ot.save_native_mlp(model, KINDS["student"], tmp_path / "b.npz", meta).read_bytes()
    assert a == (exported / "model.native.npz").read_bytes()  # the export task wrote exactly this
    other = {KEY: SETTING.model_copy(update={"top_k": 4}).to_text()}
    assert a != ot.save_native_mlp(model, KINDS["student"], tmp_path / "c.npz", other).read_bytes()
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zipfile.ZipFile(tmp_path / "a.npz").infolist())
    with pytest.raises(ValueError, match="model's own arrays"):
        ot.save_native_mlp(model, KINDS["student"], tmp_path / "d.npz", {"kind": "teacher"})
    # the export stage's way for a file it did not write (the graph scorer's): set the entry, keep the arrays
    assert with_meta(tmp_path / "c.npz", meta) == a
    legacy = ot.save_native_mlp(model, KINDS["student"], tmp_path / "e.npz", None)
    assert with_meta(legacy, meta) == a


def test_a_model_exported_again_without_a_setting_loses_it_everywhere(exported, legacy):
    """The setting belongs to the model the evaluate stage runs: an export that stores none (this model is no
    longer evaluate.learned.model) must not leave an earlier export's setting in model.json."""
    assert KEY in json.loads((exported / "model.json").read_text())
    assert KEY not in json.loads((legacy / "model.json").read_text())
    assert KEY not in OnnxScorer(legacy / "model.onnx").meta and KEY not in NativeMlp(legacy / "model.native.npz").meta


# ------------------------------------------------------------------------------------------ solve
def test_solve_runs_the_stored_setting_by_default(exported, instance, capsys):
    out, err = _solve(capsys, instance, "--heuristic", "learned", "--model", exported / "model.native.npz")
    want = _searched(instance, exported / "model.native.npz", top_k=3, max_depth=1, min_margin=0.25,
                     propagation="fc")
    assert {k: out["stats"][k] for k in ("nodes", "backtracks", "model_calls")} == \
        {k: want[k] for k in ("nodes", "backtracks", "model_calls")}
    assert out["propagation"] == "fc" and out["setting"]["sources"] == {k: "model" for k in SOLVER_KEYS}
    # what `solve` did before: the model at every depth, top-8, MAC -- another search on this instance
    before = _searched(instance, exported / "model.native.npz", top_k=8, max_depth=None, propagation="mac")
    assert before["model_calls"] > want["model_calls"] > 0
    assert "top_k=3 (model)" in err and "max_depth=1 (model)" in err and "trained on rb" in err


def test_flags_override_the_stored_setting_one_by_one(exported, instance, capsys):
    onnx = exported / "model.onnx"
    out, err = _solve(capsys, instance, "--heuristic", "learned", "--model", onnx, "--max-depth", "all",
                      "--propagation", "mac")
    want = _searched(instance, exported / "model.native.npz", top_k=3, max_depth=None, min_margin=0.25,
                     propagation="mac")  # same network: the native file scores as ONNX Runtime (1e-5)
    assert (out["stats"]["nodes"], out["stats"]["model_calls"]) == (want["nodes"], want["model_calls"])
    assert out["setting"]["sources"] == {"top_k": "model", "max_depth": "flag", "min_margin": "model",
                                         "propagation": "flag"}
    assert out["setting"]["max_depth"] is None and "max_depth=all (flag)" in err
    assert main(["solve", str(instance), "--heuristic", "learned", "--model", str(onnx), "--max-depth", "-1"]) == 2
    assert "--max-depth must be >= 0 or 'all', got -1" in capsys.readouterr().err


def test_a_model_without_a_stored_setting_loads_with_the_defaults_and_says_so(legacy, instance, capsys):
    d = defaults()
    e = EvaluateSection()  # the one place the defaults live: the config
    assert (d.top_k, d.max_depth, d.min_margin, d.propagation) == \
        (e.learned.top_k, e.learned.max_depth, e.learned.min_margin, e.propagation)
    for name in FILES[1:]:
        _, chosen = load_for_search(legacy / name)
        assert chosen.stored is None and set(chosen.sources.values()) == {"default"}
        assert chosen.values == {k: getattr(d, k) for k in SOLVER_KEYS}
    out, err = _solve(capsys, instance, "--heuristic", "learned", "--model", legacy / "model.native.npz")
    want = _searched(instance, legacy / "model.native.npz", **{k: getattr(d, k) for k in SOLVER_KEYS})
    assert (out["stats"]["nodes"], out["stats"]["model_calls"]) == (want["nodes"], want["model_calls"])
    assert out["setting"]["stored"] is False and "stores no evaluated setting" in err and "defaults" in err


def test_choose_and_a_damaged_record(tmp_path):
    c = choose(SETTING, {"top_k": 5, "max_depth": None})
    assert c.values == {"top_k": 5, "max_depth": None, "min_margin": 0.25, "propagation": "fc"}
    with pytest.raises(ValueError, match="not a learned-heuristic setting"):
        choose(SETTING, {"topk": 5})
    bad = dict(SETTING.model_dump(mode="json"), top_k=0, colour="red")
    with pytest.raises(ModelError, match=r"m\.onnx: unusable learned_setting \(top_k: .*colour"):
        stored_in({KEY: json.dumps(bad)}, "m.onnx")
    assert stored_in({}, "m.onnx") is None
