"""Each model kind's declaration works end to end on real components: the network it builds, its loss and
metrics on a batch, its ONNX export (real exporter, real ONNX Runtime) and the scorer the solver would use."""
import numpy as np
import pytest
import torch

from ray_pipeline.config import load_config
from ray_pipeline.errors import ModelError
from ray_pipeline.export import onnx_tools
from ray_pipeline.inference import OnnxScorer
from ray_pipeline.kinds import KINDS, kind_of
from ray_pipeline.models import io as model_io
from ray_pipeline.paths import RunPaths
from ray_pipeline.train import driver

from ..conftest import CONFIGS

CFG = load_config(CONFIGS / "quick.yaml", ["train.teacher.hidden=16", "train.student.hidden=8",
                                            "train.cost.hidden=8"])


def _model(name: str):
    section = driver.model_section(CFG, name)
    n = len(KINDS[name].features)
    spec = model_io.make_spec(name, driver.hparams_of(name, section), {"mean": [0.0] * n, "std": [1.0] * n},
                              train_key="k", dataset_hash="d", seed=0)
    torch.manual_seed(0)
    return model_io.build(spec).eval(), spec, section


def _batch(kind, rng):
    if not kind.scorer:
        return {"x": torch.tensor(rng.normal(size=(5, len(kind.features))), dtype=torch.float32),
                "y": torch.tensor(rng.normal(size=(5, 2)), dtype=torch.float32)}
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0, 2] = False
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]], dtype=torch.float32)
    b = {"x": torch.tensor(rng.normal(size=(4, 3, len(kind.features))), dtype=torch.float32), "mask": mask,
         "target": target, "label": target, "costs": torch.tensor([[1, 2, 0], [3, 1, 2], [4, 4, 1], [1, 1, 5]],
                                                                 dtype=torch.float32)}
    if kind.name == "student":  # distilled from the teacher's logits (train.student.distill.teachers)
        b["t_teacher"] = torch.zeros(4, 3)
    return b


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kind_trains_and_reports_its_declared_metrics(name, tmp_path):
    kind = KINDS[name]
    model, spec, section = _model(name)
    c = driver.loop_config(CFG, RunPaths.of(tmp_path, "r"), name, section, spec, tmp_path)
    loss, sums = kind.loss_and_sums(model, _batch(kind, np.random.default_rng(0)), c, train=False)
    assert torch.isfinite(loss) and set(sums) <= set(kind.metric_sum_keys())
    done = kind.finish_metrics({k: sums.get(k, 0.0) for k in kind.metric_sum_keys()}, prefix="val_")
    assert driver.score_of(CFG, name)[0] in {"val_loss", *done}  # the selection metric is one it reports
    assert (c.distill is not None) == (name == "student")


@pytest.mark.parametrize("name", [k for k in KINDS if KINDS[k].scorer])
def test_train_target_binary_trains_scorers_on_per_candidate_sigmoids(name, tmp_path):
    """train.target binary: the spec says so (calibration reads it) and the loss is the per-candidate one."""
    from ray_pipeline.train import losses

    cfg = CFG.model_copy(update={"train": CFG.train.model_copy(update={"target": "binary"})})
    kind, section = KINDS[name], driver.model_section(cfg, name)
    n = len(kind.features)
    spec = driver.model_spec(cfg, name, section, {"mean": [0.0] * n, "std": [1.0] * n}, train_key="k",
                             dataset_hash="d")
    soft = CFG.model_copy(update={"train": CFG.train.model_copy(update={"target": "soft"})})
    assert spec["scores"] == "binary" and driver.model_spec(soft, name, section, spec["norm"])["scores"] == "listwise"
    assert "scores" not in driver.model_spec(cfg, "cost", driver.model_section(cfg, "cost"), spec["norm"])
    torch.manual_seed(0)
    model = model_io.build(spec).eval()
    c = driver.loop_config(cfg, RunPaths.of(tmp_path, "r"), name, section, spec, tmp_path)
    b = _batch(kind, np.random.default_rng(0))
    b["label"] = (b["target"] > 0).float()
    loss, _ = kind.loss_and_sums(model, b, c, train=False)
    s, mask = model(b["x"], b["mask"]), b["mask"]
    if c.distill is not None:
        d = c.distill
        want = losses.distill_binary(s, mask, b["label"], losses.teacher_probs_binary([b["t_teacher"]], [1.0],
                                                                                      d.temperature),
                                     d.alpha, d.temperature)
    else:
        want = losses.binary_ce(s, mask, b["label"])
    assert float(loss) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kind_exports_to_onnx_and_scores_like_pytorch(name, tmp_path):
    kind = KINDS[name]
    model, spec, _ = _model(name)
    path = onnx_tools.export_onnx(model, kind, tmp_path / "model.onnx", {"kind": name})
    x = np.random.default_rng(1).normal(size=(5, len(kind.features))).astype(np.float32)
    if not kind.scorer:
        with pytest.raises(ModelError, match="not a variable scorer"):
            OnnxScorer(path)
        return
    onnx_scores = OnnxScorer(path)(x)  # one state's 5 candidates, as the solver calls it
    torch_scores = model_io.TorchScorer(model, kind)(x)
    assert onnx_scores.shape == (5,)
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)
    if kind.set_input:  # the export stage and Ray Data batch inference feed padded sets with their masks
        sets = np.random.default_rng(2).normal(size=(2, 4, len(kind.features))).astype(np.float32)
        mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
        session = onnx_tools.ort_session(path)
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], (sets, mask))))[0]
        with torch.inference_mode():
            want = model(torch.from_numpy(sets), torch.from_numpy(mask)).numpy()
        np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ModelError, match="model.json: unknown model kind 'critic'"):
        kind_of("critic", "model.json")


@pytest.mark.parametrize("name", [k for k in KINDS if KINDS[k].scorer])
def test_set_input_is_declared_exactly_for_networks_that_compare_candidates(name):
    """A candidate's score that depends on the other candidates of the state needs the whole set (and its mask)
    at export and in the solver; an independent per-row score must not be fed sets."""
    kind = KINDS[name]
    model, _, _ = _model(name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, len(kind.features))).astype(np.float32)
    y = x.copy()
    y[1:] = rng.normal(size=(4, len(kind.features)))
    with torch.inference_mode():
        sets = model(torch.from_numpy(np.stack([x, y])), torch.ones(2, 5, dtype=torch.bool)).numpy()
    compares = not np.isclose(sets[0, 0], sets[1, 0], atol=1e-6)
    assert compares == kind.set_input
