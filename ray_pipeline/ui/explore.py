"""Model Explorer core: solve one instance with a model and with dom/wdeg, the root decision as the model saw
it, the cost predictor's estimate, and a PCA view of the student's hidden layer. Pure: no web, no Ray.

`solve_pair` and `drift_one` run in a worker process of the web app (see app.py): they take only plain values
(paths, numbers) and return plain dicts, and every error a user can cause comes back as {"error": message}
with the file and line the reader named, never as an exception.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..features import INPUT_FEATURES
from ..kinds import KINDS, cost_predictor

# The solver's API (Solver, candidate_features, dom_wdeg_order, unassigned) is all this module uses: the
# solver's internals are being replaced by a native core with the same Python API.


class RootRecorder:
    """Wraps the scorer: at the first call (the root decision) keeps the candidates, features and scores."""

    def __init__(self, inner: Callable[[np.ndarray], np.ndarray], min_margin: float = 0.0):
        self.inner, self.min_margin = inner, min_margin
        self.solver: Any = None
        self.root: Optional[dict[str, Any]] = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.inner(x), dtype=np.float64).reshape(-1)
        if self.root is None:
            cands: Optional[list[int]] = None
            try:  # which variables these rows are: the top-K by dom/wdeg of the current state, as the solver does
                from ..features import candidate_features

                top = self.solver.dom_wdeg_order(self.solver.unassigned())[: len(x)]
                if np.allclose(candidate_features(self.solver, top, 0), x, atol=1e-6):
                    cands = [int(v) for v in top]
            except Exception:  # noqa: BLE001 -- naming the variables is a nicety; the features are what matter
                cands = None
            best = int(np.argmax(scores)) if len(scores) else 0  # first maximum, as the solver takes it
            if best and scores[best] - scores[0] <= self.min_margin:
                best = 0  # the solver keeps dom/wdeg's choice unless the model's margin is wide enough
            self.root = {"candidates": cands, "features": np.asarray(x, dtype=np.float64).round(6).tolist(),
                         "scores": scores.round(6).tolist(), "chosen": best}
        return scores


def _describe(inst: Any) -> dict[str, Any]:
    return {"name": inst.name, "family": inst.family, "size": inst.size, "n": inst.n,
            "binary": len(inst.binary), "clauses": len(inst.clauses), "params": inst.params}


def _run(inst: Any, **kw: Any) -> tuple[dict[str, Any], Any]:
    from ..solver import Solver

    solver = Solver(inst, **kw)
    rec = kw.get("scorer")
    if isinstance(rec, RootRecorder):
        rec.solver = solver
    res = solver.solve()
    return {"status": res.status, "stats": res.stats.to_dict()}, res


def cost_estimate(inst: Any, run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's cost predictor on this instance (ONNX): estimated dom/wdeg nodes and seconds, or None."""
    f = run_dir / "models" / cost_predictor().name / "model.onnx"
    if not f.is_file():
        return None
    from ..features import instance_features
    from ..inference import ort_session

    sess = ort_session(f)
    x = instance_features(inst).reshape(1, -1).astype(np.float32)
    out = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], dtype=np.float64).reshape(-1)
    # targets are [log1p(nodes), log(seconds)] of the baseline (dom/wdeg, MAC) solve: data.dataset.log_cost_targets
    return {"nodes": float(np.expm1(out[0])), "time_s": float(np.exp(out[1])) if len(out) > 1 else None,
            "model": str(f)}


def read(path: str, colors: Optional[int], display_root: str = "") -> Any:
    """read_instance with the store's directory taken off the message, so the user sees their file name."""
    from ..problems import InstanceError, read_instance

    try:
        return read_instance(path, colors=colors)
    except InstanceError as e:
        msg = str(e)
        raise InstanceError(msg.replace(display_root, "") if display_root else msg) from None


def solve_pair(path: str, colors: Optional[int], scorer_file: str, node_limit: int, time_limit: float,
               run_dir: str, display_root: str = "") -> dict[str, Any]:
    """Learned heuristic and dom/wdeg on one instance, side by side, with the same limits and propagation. The
    learned heuristic runs with the setting stored in the model file, as `ray-pipeline solve --model` does
    without flags (the same function chooses it)."""
    from ..inference import ModelError, load_for_search
    from ..problems import InstanceError

    try:
        inst = read(path, colors, display_root)
    except InstanceError as e:
        return {"error": str(e)}
    try:
        scorer, setting = load_for_search(scorer_file)
    except ModelError as e:
        return {"error": str(e)}
    kw = setting.solver_kwargs()
    rec = RootRecorder(scorer, kw["min_margin"])
    learned, res = _run(inst, heuristic="learned", scorer=rec, node_limit=node_limit, time_limit=time_limit, **kw)
    base, _ = _run(inst, heuristic="dom-wdeg", propagation=kw["propagation"], node_limit=node_limit,
                   time_limit=time_limit)
    root = rec.root
    if root is not None:
        one_based = inst.family in ("cnf", "col")  # as `ray-pipeline solve` prints them
        if root["candidates"] is not None:
            root["labels"] = [str(v + 1 if one_based else v) for v in root["candidates"]]
        root["feature_names"] = list(INPUT_FEATURES)
    cost = None
    try:
        cost = cost_estimate(inst, Path(run_dir))
    except Exception as e:  # noqa: BLE001 -- a broken cost model must not hide the solves
        cost = {"error": f"cost predictor: {type(e).__name__}: {str(e)[:200]}"}
    return {"instance": _describe(inst), "learned": learned, "dom-wdeg": base, "root": root, "cost": cost,
            "limits": {"node_limit": node_limit, "time_limit": time_limit}, "setting": setting.as_dict(),
            "setting_text": setting.describe(Path(scorer_file).name)}


def drift_one(path: str, colors: Optional[int], model_dir: str, display_root: str = "") -> dict[str, Any]:
    """The drift check of one instance against the model's training data (see ray_pipeline.drift)."""
    from .. import drift
    from ..problems import InstanceError

    try:
        inst = read(path, colors, display_root)
        return drift.check(drift.resolve_model(model_dir), [inst])
    except (InstanceError, drift.DriftError) as e:
        return {"error": str(e)}


def has_embedding(kind: Any) -> bool:
    """The embedding view (the hidden layer before the output) exists for scorers of one candidate at a time."""
    k = KINDS.get(kind)
    return bool(k and k.scorer and not k.set_input)


def embedding(model_dir: Path, run_dir: Path, max_states: int = 400, seed: int = 0) -> dict[str, Any]:
    """PCA (numpy SVD) of the student's last hidden layer for dom/wdeg's candidate in dataset states, with
    whether that candidate was a best probe (cost equal to the state's cheapest)."""
    import pyarrow.compute as pc
    import torch

    from ..data import dataset as ds
    from ..models import io as model_io
    from ..paths import RunPaths

    model, spec = model_io.load(model_dir)
    if not has_embedding(spec["kind"]):
        return {"error": f"{model_dir}: the embedding view is for a scorer that scores each candidate alone "
                         f"(an MLP per candidate), not a {spec['kind']}"}
    states = ds.read_states(RunPaths(run_dir).dataset, "train")
    fam = None
    try:
        fam = json.loads((run_dir / "manifest.json").read_text())["config"]["train"]["families"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        pass
    if fam:
        import pyarrow as pa

        states = states.filter(pc.is_in(states["family"], value_set=pa.array(fam)))
    n = states.num_rows
    if n < 3:
        return {"error": f"{RunPaths(run_dir).dataset}: only {n} training states"}
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_states), replace=False))
    states = states.take(idx)
    x = np.asarray([f[0] for f in states["features"].to_pylist()], dtype=np.float32)  # dom/wdeg's choice
    costs = states["costs"].to_pylist()
    best = np.array([c[0] <= min(c) for c in costs])
    with torch.inference_mode():
        h = model.net[:-1](model.norm(torch.from_numpy(x))).numpy().astype(np.float64)  # before the output layer
    h -= h.mean(axis=0)
    _, s, vt = np.linalg.svd(h, full_matrices=False)
    xy = h @ vt[:2].T
    var = s ** 2
    explained = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    return {"points": xy.round(5).tolist(), "best": best.tolist(), "explained": explained, "states": int(len(x)),
            "hidden": int(h.shape[1]), "families": fam}
