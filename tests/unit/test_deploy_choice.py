"""The export stage's deploy choice (export.stage.choose_files) reads the accuracy columns of its variant
table, never the latency ones: machine load reorders latencies between runs, and the deployed file must not
follow it."""
from __future__ import annotations

import itertools
import json

import numpy as np

from ray_pipeline.export.stage import INT8_ORDER, choose_files


def _table(top1: dict[str, float], latency: dict[str, float]) -> list[dict]:
    return [{"variant": v, "top1": top1[v], "latency_single_us": latency[v], "latency_batch_us": 10 * latency[v]}
            for v in top1]


VARIANTS = ("pytorch", "onnx-fp32", "native", *INT8_ORDER)


def test_the_deploy_choice_is_a_pure_function_of_the_accuracy_columns():
    """Every latency ordering of the variants (what machine load reshuffles) gives the same choice; only which
    variants passed their checks and their top-1 decide it."""
    rng = np.random.default_rng(0)
    for with_native, drop in itertools.product((True, False), (0.0, 0.005, 0.02)):
        names = [v for v in VARIANTS if with_native or v != "native"]
        top1 = {v: 0.6 for v in names}
        top1["onnx-int8-dynamic"] = 0.6 - drop
        top1["onnx-int8-static"] = 0.6 - 2 * drop
        choices = set()
        for _ in range(50):
            lat = dict(zip(names, rng.permutation(len(names)) * rng.uniform(0.5, 50) + rng.uniform(1, 30)))
            choices.add(json.dumps(choose_files(_table(top1, lat), 0.01), sort_keys=True))
        assert len(choices) == 1, (with_native, drop)
        got = json.loads(choices.pop())
        assert got["deploy"] == ("model.native.npz" if with_native else "model.onnx")  # never INT8
        assert got["int8_choice"] == ("onnx-int8-static" if drop == 0 else "onnx-int8-dynamic")  # most accurate
        assert got["int8_within_tolerance"] == (drop <= 0.01)
    # INT8 far faster and as accurate still does not deploy: the preference is fixed
    top1 = {"pytorch": 0.6, "onnx-fp32": 0.6, "onnx-int8-static": 0.6}
    lat = {"pytorch": 60.0, "onnx-fp32": 100.0, "onnx-int8-static": 1.0}
    assert choose_files(_table(top1, lat), 0.01) == {"int8_choice": "onnx-int8-static",
                                                      "int8_within_tolerance": True, "deploy": "model.onnx"}
    assert choose_files(_table({"onnx-fp32": 0.6}, {"onnx-fp32": 1.0}), 0.01)["int8_choice"] is None
