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


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ModelError, match="model.json: unknown model kind 'critic'"):
        kind_of("critic", "model.json")
