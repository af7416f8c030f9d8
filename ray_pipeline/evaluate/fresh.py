"""Calibration on fresh instances of the training mix: a test split of ~35 instances cannot settle ECE.

The evaluate stage fits T on validation and measures ECE on test; in quick.yaml each holds ~35 instances, whose
states share their instance's difficulty, so accuracy moves by several points as a block (val 0.53, test 0.60
on one demo) and the instance-bootstrap interval of test ECE is ~0.06 wide. Here the config's own mix
(data.generate.families, restricted to train.families) is built again, `copies` times its counts, with indices
from CALIBRATION_INDEX_OFFSET (no stage and no other benchmark builds them) and the run's seed; originals only
(no symmetric copies). Each is traced and labelled exactly as the generate stage labels an original
(steps.trace_instance / label_instance, the same informative-state filter). Pure: the evaluate stage runs
`label_fresh` as Ray tasks, `ray-pipeline bench calibration` in local processes."""
from __future__ import annotations

from typing import Any

import numpy as np

FreshSpec = tuple[str, str, int, int, dict[str, Any]]  # (family, size, index, seed, params)


def fresh_specs(cfg, copies: int) -> list[FreshSpec]:
    """The fresh instances: the training mix, `copies` times its counts."""
    from ..data.steps import CALIBRATION_INDEX_OFFSET

    fams = cfg.train.families
    return [(fs.family, size, CALIBRATION_INDEX_OFFSET + i, cfg.run.seed, dict(fs.params))
            for fs in cfg.data.generate.families if fams is None or fs.family in fams
            for size in fs.sizes for i in range(fs.count * copies)]


def label_fresh(specs: list[FreshSpec], data) -> list[dict[str, Any]]:
    """The instances' informative labelled states, each built and labelled as the generate stage does an
    original's."""
    from ..data import steps

    return [dict(s, base_id=inst.name, family=family, size=size)
            for family, size, index, seed, params in specs
            for inst in [steps.build_original(family, size, index, seed, params)]
            for s in steps.informative_states(inst, data, seed)]


def label_fresh_job(job: tuple[list[FreshSpec], Any]) -> list[dict[str, Any]]:
    return label_fresh(*job)


def chunked(specs: list[FreshSpec], n: int) -> list[list[FreshSpec]]:
    """At most n round-robin chunks (one task or worker job each): every chunk gets each family/size."""
    return [specs[i::n] for i in range(min(n, len(specs)))]


def in_order(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The chunks' states in state_id order: the figures do not depend on how the work was split."""
    return sorted((s for part in parts for s in part), key=lambda s: s["state_id"])


def summarize(model, states: list[dict[str, Any]], k_max: int, t: float, bins: int, binary: bool
              ) -> dict[str, Any]:
    """ECE at T = 1 and at t with the instance-bootstrap interval, accuracy and mean confidence: over all the
    states and per family/size."""
    from ..data import dataset as ds_lib
    from . import analysis

    a = ds_lib.to_arrays({k: [s[k] for s in states] for k in ("n_cands", "features", "costs")}, k_max)
    scores = analysis.scores_of(model, a)
    groups = np.array([s["base_id"] for s in states])
    group_of = np.array([f"{s['family']}/{s['size']}" for s in states])

    def one(sel: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"states": int(sel.sum()), "instances": len(set(groups[sel].tolist()))}
        for key, temp in (("before", 1.0), ("after", t)):
            cal = analysis.calibration(scores[sel], a["target"][sel], temp, bins, binary, groups[sel])
            out[key] = {k: cal[k] for k in ("temperature", "ece", "ece_ci95", "accuracy", "mean_confidence")}
        return out

    return {**one(np.ones(len(states), dtype=bool)),
            "by_group": {g: one(group_of == g) for g in sorted(set(group_of.tolist()))}}
