"""The student MLP evaluated inside the solver core (solver.policy.NativeMlp, `model.native.npz`).

A trained-shaped student (random weights, real normalisation ranges) is written by the export's converter and
must score like PyTorch and ONNX Runtime to 1e-5; the core, scoring it natively, must search the same trees as
the same model called from Python; files that are not what they claim are refused, naming the file.
"""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from ray_pipeline.export import onnx_tools as ot
from ray_pipeline.inference import ModelError, load_scorer
from ray_pipeline.kinds import KINDS
from ray_pipeline.models.io import TorchScorer
from ray_pipeline.models.nets import StudentScorer
from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver
from ray_pipeline.solver.policy import NativeMlp, PolicyFileError, save_mlp
from ray_pipeline.solver.schema import INPUT_FEATURES

F = len(INPUT_FEATURES)


def _student(seed: int = 0, hidden: int = 64, layers: int = 2) -> StudentScorer:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    return StudentScorer(F, hidden, layers, 0.1, rng.normal(0, 2, F).tolist(), rng.uniform(0.2, 3, F).tolist()).eval()


def _rows(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 4, (n, F)).astype(np.float32)
    x[rng.random((n, F)) < 0.3] = 0.0  # many features are exactly 0 in real states
    return x


def test_native_mlp_scores_like_pytorch_and_onnx_runtime(tmp_path):
    for hidden, layers in ((64, 2), (16, 1), (32, 3)):
        model = _student(hidden=hidden, layers=layers)
        path = ot.save_native_mlp(model, KINDS["student"], tmp_path / f"m{hidden}.npz")
        mlp = NativeMlp(path)
        x = _rows(600)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        onnx = ot.export_onnx(model, KINDS["student"], tmp_path / f"m{hidden}.onnx", {"kind": "student"})
        got = mlp(x)
        assert np.abs(got - ref).max() <= 1e-5 and np.abs(got - ot.run_onnx(onnx, x)).max() <= 1e-5
        assert mlp.params == sum(p.numel() for p in model.parameters())
        assert len(np.unique(got.round(4))) > 100  # not a constant: the comparison above means something
    # the same weights give the same bytes (no timestamps in the file)
    a = ot.save_native_mlp(_student(), KINDS["student"], tmp_path / "a.npz").read_bytes()
    assert a == ot.save_native_mlp(_student(), KINDS["student"], tmp_path / "b.npz").read_bytes()
    assert a != ot.save_native_mlp(_student(seed=1), KINDS["student"], tmp_path / "c.npz").read_bytes()


@pytest.mark.parametrize("family,size", [("rb", "medium"), ("coloring", "small"), ("ksat", "small")])
def test_native_policy_searches_the_trees_of_the_same_model_called_from_python(tmp_path, family, size):
    model = _student()
    native = NativeMlp(ot.save_native_mlp(model, KINDS["student"], tmp_path / "m.npz"))
    python = TorchScorer(model, KINDS["student"])
    for i in range(3):
        inst = generate(family, size, i, 0)
        kw = dict(heuristic="learned", top_k=8, node_limit=3000)
        a = Solver(inst, scorer=native, **kw).solve()
        b = Solver(inst, scorer=python, **kw).solve()
        assert (a.status, a.stats.nodes, a.stats.backtracks, a.stats.model_calls) == \
            (b.status, b.stats.nodes, b.stats.backtracks, b.stats.model_calls), (family, i)
        assert a.stats.model_calls > 0 and a.stats.model_time_s > 0
        base = Solver(inst, heuristic="dom-wdeg", node_limit=3000).solve()
        assert a.status == base.status or "UNKNOWN" in (a.status, base.status)


def test_native_policy_is_what_load_scorer_returns_for_npz(tmp_path):
    path = ot.save_native_mlp(_student(), KINDS["student"], tmp_path / "model.native.npz")
    s = load_scorer(path)
    assert isinstance(s, NativeMlp) and s.kind == "student"
    with pytest.raises(ModelError, match="model.native.npz"):
        load_scorer(tmp_path / "missing" / "model.native.npz")


def test_bad_native_policy_files_are_refused_naming_the_file(tmp_path):
    good = ot.save_native_mlp(_student(), KINDS["student"], tmp_path / "good.npz")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}

    def write(name: str, **change) -> str:
        p = tmp_path / name
        a = dict(arrays, **change)
        with open(p, "wb") as f:
            np.savez(f, **a)
        return str(p)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    pickled = tmp_path / "pickled.npz"
    with open(pickled, "wb") as f:
        np.savez(f, **dict(arrays, kind=np.array([{"evil": 1}], dtype=object)))
    cases = {
        str(junk): "not a native policy file \\(not an .npz archive\\)",  # not "pickled data": it is text
        str(truncated): "not a native policy file",
        str(pickled): "not a native policy file",  # object arrays need pickle: refused
        write("version.npz", feature_version=np.array("v1")): "built for features 'v1'",
        write("names.npz", features=np.array(list(INPUT_FEATURES[::-1]))): "feature names differ",
        write("shape.npz", w1=arrays["w1"][:, :10]): "layer 1",
        write("nan.npz", b0=np.full_like(arrays["b0"], np.nan)): "non-finite",
        write("std.npz", std=np.zeros_like(arrays["std"])): "stdev must be positive",
        write("layers.npz", n_layers=np.array(5)): "5 layers declared",
        write("two_out.npz", w2=np.ones((2, 64), np.float32), b2=np.zeros(2, np.float32)): "one output",
    }
    for path, reason in cases.items():
        with pytest.raises(PolicyFileError, match=reason) as e:
            NativeMlp(path)
        assert path in str(e.value)
    missing = dict(arrays)
    del missing["mean"]
    p = tmp_path / "missing.npz"
    with zipfile.ZipFile(p, "w") as z:
        for k, v in missing.items():
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, v)
    with pytest.raises(PolicyFileError, match="missing arrays"):
        NativeMlp(p)


def test_the_score_layer_must_be_the_last_and_linear(tmp_path):
    model = _student()
    model.net.append(torch.nn.Sigmoid())
    with pytest.raises(ot.ExportError, match="no native counterpart"):
        ot.save_native_mlp(model, KINDS["student"], tmp_path / "x.npz")
    a = [(np.ones((4, F), np.float32), np.zeros(4, np.float32), True),
         (np.ones((1, 4), np.float32), np.zeros(1, np.float32), True)]
    save_mlp(tmp_path / "relu_out.npz", kind="student", mean=np.zeros(F), std=np.ones(F), clip=8.0, layers=a)
    with pytest.raises(PolicyFileError, match="score layer takes no ReLU"):
        NativeMlp(tmp_path / "relu_out.npz")
