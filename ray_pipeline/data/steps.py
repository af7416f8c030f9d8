"""The dataset steps as pure functions (no Ray): specs -> instance -> trace -> labelled states -> purify/split.

Ray Data adapters (`ray_data.py`) call these on blocks of rows; tests call them directly.
Everything here is deterministic: per-instance seeds derive from (base seed, family, size, index, copy),
and probes are bounded by node budgets, never by time (a time limit only guards the trace and is reported).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any, Optional, Sequence

import numpy as np

from ..config import DataSection, DebugSection, TraceSection
from ..features import candidate_features, instance_features
from ..problems import generate
from ..problems.instance import Instance, derive_seed, dumps, loads  # noqa: F401 (loads: for ray_data)
from ..solver import Solver, compile_instance
from . import augment

HELDOUT_INDEX_OFFSET = 1_000_000  # held-out instances never share (family, size, index) with the main ones
TUNING_INDEX_OFFSET = 2_000_000  # `bench learned` tunes the learned heuristic on neither train nor held-out ones
CALIBRATION_INDEX_OFFSET = 3_000_000  # evaluate.fresh_calibration / bench calibration: fresh training-mix instances


class InjectedFault(RuntimeError):
    """Raised by debug.fail_instance_every (fault-injection tests only)."""


# ------------------------------------------------------------------------------------------ specs
def instance_specs(data: DataSection, base_seed: int) -> list[dict[str, Any]]:
    """One spec per instance to build: every (family, size, index) x augmented copy, plus held-out ones."""
    specs = []
    for heldout, families in ((False, data.generate.families), (True, data.generate.heldout)):
        for fs in families:
            for size in fs.sizes:
                for i in range(fs.count):
                    index = i + (HELDOUT_INDEX_OFFSET if heldout else 0)
                    base_id = base_id_of(fs.family, size, index)
                    for copy in range(1 if heldout else data.augment.factor):
                        specs.append({
                            "ordinal": len(specs), "instance_id": base_id + (f"~a{copy}" if copy else ""),
                            "base_id": base_id, "family": fs.family, "size": size, "index": index, "aug": copy,
                            "heldout": heldout, "params_json": json.dumps(fs.params, sort_keys=True),
                            "base_seed": base_seed,
                        })
    return specs


def base_id_of(family: str, size: str, index: int) -> str:
    """An original instance's id; also its name, which seeds the labeller's sample of states."""
    return f"{family}-{size}-{index:07d}"


def build_original(family: str, size: str, index: int, seed: int, params: dict[str, Any]) -> Instance:
    """An original instance (no symmetric copy), named and built as the generate stage builds it."""
    base_id = base_id_of(family, size, index)
    return build_instance({"ordinal": 0, "instance_id": base_id, "base_id": base_id, "family": family, "size": size,
                           "index": index, "aug": 0, "params_json": json.dumps(params), "base_seed": seed})


def build_instance(spec: dict[str, Any], debug: Optional[DebugSection] = None) -> Instance:
    if debug is not None and debug.fail_instance_every and (spec["ordinal"] + 1) % debug.fail_instance_every == 0:
        raise InjectedFault(f"injected failure for instance ordinal {spec['ordinal']}")
    inst = generate(spec["family"], spec["size"], spec["index"], spec["base_seed"], json.loads(spec["params_json"]))
    if spec["aug"]:
        rng = random.Random(derive_seed(spec["base_seed"], spec["base_id"], "augment", spec["aug"]))
        inst = augment.apply(inst, augment.random_symmetry(inst, rng), rng)
    inst.name = spec["instance_id"]
    return inst


# ------------------------------------------------------------------------------------------ trace
def trace_instance(inst: Instance, data: DataSection) -> dict[str, Any]:
    t = data.trace
    solver = Solver(inst, heuristic=t.heuristic, propagation=t.propagation, node_limit=t.node_limit,
                    time_limit=t.time_limit_s)
    solver.record_trace(max_records=t.max_records)  # the SolverLogger record, as columns from the core
    r = solver.solve()
    rec = solver.trace()
    limit = ""
    if r.status == "UNKNOWN":
        limit = "node" if r.stats.nodes > t.node_limit else "time"
    return {"status": r.status, "nodes": r.stats.nodes, "backtracks": r.stats.backtracks,
            "propagations": r.stats.propagations, "checks": r.stats.checks, "limit": limit,
            "trace_time_s": r.stats.time_s, "n_decisions": r.stats.nodes,
            "dec_depth": rec.depth.tolist(), "dec_n_cands": rec.n_cands.tolist(), "dec_chosen": rec.chosen.tolist(),
            "dec_subtree": rec.subtree.tolist(), "dec_solved": rec.solved.tolist()}


# ------------------------------------------------------------------------------------------ label
def choose_states(n_cands: list[int], depths: list[int], k: int, min_candidates: int, max_depth: Optional[int],
                  seed: int) -> list[int]:
    eligible = [i for i, (c, d) in enumerate(zip(n_cands, depths))
                if c >= min_candidates and (max_depth is None or d <= max_depth)]
    rng = random.Random(seed)
    return sorted(rng.sample(eligible, min(k, len(eligible))))


def label_instance(inst: Instance, trace: dict[str, Any], data: DataSection, base_seed: int, heldout: bool = False,
                   copies: Sequence[Instance] = ()) -> tuple[list[dict], dict]:
    """Probe up to top_k candidates (best by dom/wdeg) at a sample of the trace's decision states.

    cost(c) = nodes needed to finish the subproblem with c branched on first, then the trace heuristic,
    under `node_budget`; over budget the cost is budget+1 and marked censored. `copies`: the same instance with
    its binary constraints in other orders (augment.reordered; no clauses): each state is probed on them too,
    with the same domains and weights, into `costs_on_copies` (`bench labels`; the dataset never asks).
    """
    lab, tr = data.label, data.trace
    k = lab.heldout_states_per_instance if heldout and lab.heldout_states_per_instance else lab.states_per_instance
    picks = choose_states(trace["dec_n_cands"], trace["dec_depth"], k, lab.min_candidates, lab.max_depth,
                          derive_seed(base_seed, inst.name, "label"))
    stats = {"probes": 0, "probe_nodes": 0}
    for copy in copies:  # refused before anything runs, whatever the sample
        if copy.clauses:
            raise ValueError(f"{copy.name}: probing on reordered copies takes binary constraints only (clause "
                             "weights are not mapped)")
    if not picks:
        return [], stats
    compiled = compile_instance(inst)  # shared by the replay and every probe (and their arc caches)
    snapshots = replay_states(inst, compiled, picks, data.trace)
    copied = [_copy_target(compiled, c) for c in copies]
    states = []
    for idx in picks:
        if idx not in snapshots:  # the trace stopped on time before this state: skip, never guess
            continue
        dom, weights, depth = snapshots[idx]
        s = Solver(inst, heuristic=tr.heuristic, propagation=tr.propagation, domains=dom, weights=weights,
                   compiled=compiled)
        cands = s.dom_wdeg_order(s.unassigned())[: lab.top_k]
        feats = candidate_features(s, cands, depth)
        nodes = s.probe_costs(cands, lab.node_budget)  # the expert heuristic's probes, too
        costs = [float(c) for c in nodes]
        censored = [c > lab.node_budget for c in nodes]
        stats["probes"] += s.stats.probes
        stats["probe_nodes"] += s.stats.probe_nodes
        best = int(np.argmin(costs))
        states.append({
            "state_id": f"{inst.name}/{idx:06d}", "decision": idx, "depth": depth, "n_cands": len(cands),
            "candidates": cands, "features": feats.tolist(), "costs": costs, "censored": censored, "best": best,
            "n_best": int(sum(1 for c in costs if c == costs[best])),
        })
        if copied:
            states[-1]["costs_on_copies"] = [
                [float(c) for c in Solver(copy, heuristic=tr.heuristic, propagation=tr.propagation, domains=dom,
                                          weights=[weights[j] for j in where], compiled=cc
                                          ).probe_costs(cands, lab.node_budget)]
                for copy, cc, where in copied]
    return states, stats


def replay_states(inst: Instance, compiled, decisions: Sequence[int], trace: TraceSection
                  ) -> dict[int, tuple[list[int], list[int], int]]:
    """The states at `decisions` of the trace's search: decision -> (domains, weights, depth). The search is
    deterministic, so replaying it up to the last decision finds the states the trace passed through (the label
    step's states, and the graph models' inputs rebuilt from a dataset)."""
    if not decisions:
        return {}
    replay = Solver(inst, heuristic=trace.heuristic, propagation=trace.propagation,
                    node_limit=max(decisions) + 1, compiled=compiled)
    replay.record_trace(max_records=0, capture=list(decisions))
    replay.solve()
    return replay.trace().snapshots


def _copy_target(compiled, copy: Instance) -> tuple[Instance, Any, list[int]]:
    """(copy, its compiled form, for each of its constraints the original's index): weights follow their
    constraint, found by its variable pair (merged constraints: one per pair, with the same support table)."""
    cc = compile_instance(copy)

    def tables(c) -> dict[tuple[int, int], tuple[int, ...]]:
        return {c.cvars[cid]: sup for x, arcs in enumerate(c.arcs) for _, sup, cid in arcs if c.cvars[cid][0] == x}

    if tables(cc) != tables(compiled):
        raise ValueError(f"{copy.name}: not a reordering of the labelled instance's constraints")
    pos = {pair: j for j, pair in enumerate(compiled.cvars)}
    return copy, cc, [pos[pair] for pair in cc.cvars]


def informative_states(inst: Instance, data: DataSection, base_seed: int, copies: Sequence[Instance] = ()
                       ) -> list[dict]:
    """Trace, label and keep the states that teach something: the generate stage's steps for one instance, in
    one call (its Ray Data pipeline runs them as separate, timed steps)."""
    states, _ = label_instance(inst, trace_instance(inst, data), data, base_seed, copies=copies)
    return [s for s in states if is_informative(s["costs"], s["censored"], data.label.min_candidates)]


# ------------------------------------------------------------------------------------------ purify / split
def is_informative(costs: list[float], censored: list[bool], min_candidates: int) -> bool:
    """A state teaches something only if it has candidates whose probes differ and are not all censored."""
    return len(costs) >= min_candidates and not all(censored) and min(costs) < max(costs)


def state_key(features: np.ndarray, costs: np.ndarray) -> str:
    h = hashlib.sha1(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(costs, dtype=np.float32).tobytes())
    return h.hexdigest()


def assign_splits(base_ids: list[tuple[str, str, str]], fractions: tuple[float, float, float], seed: int
                  ) -> dict[str, str]:
    """Split base instances (never rows) per (family, size) stratum: train/val/test by the given fractions.

    `base_ids`: (base_id, family, size). Augmented copies share their base's split, so no leakage.
    """
    strata: dict[tuple[str, str], list[str]] = {}
    for base_id, family, size in sorted(set(base_ids)):
        strata.setdefault((family, size), []).append(base_id)
    out = {}
    for (family, size), ids in sorted(strata.items()):
        ids = sorted(ids, key=lambda b: hashlib.sha256(f"{seed}/{b}".encode()).hexdigest())
        n = len(ids)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        n_train = n - n_val - n_test
        for i, b in enumerate(ids):
            out[b] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


def balance_caps(group_counts: dict[tuple[str, str], int], max_ratio: float) -> dict[tuple[str, str], int]:
    """Cap each (family, size) group at max_ratio x the median group: one large family cannot dominate, and a
    tiny group does not shrink everything else (capping at a multiple of the smallest group threw away half
    of the labelled states in the quick config)."""
    if not group_counts:
        return {}
    cap = int(math.ceil(max_ratio * float(np.median(list(group_counts.values())))))
    return {g: min(c, cap) for g, c in group_counts.items()}


def norm_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Mean and std per column (std floored so constant features do not blow up)."""
    if len(x) == 0:
        return {"mean": [0.0] * x.shape[1], "std": [1.0] * x.shape[1]}
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    return {"mean": mean.astype(np.float32).tolist(), "std": np.maximum(std, 1e-3).astype(np.float32).tolist()}


def instance_row(spec: dict[str, Any], inst: Instance, trace: dict[str, Any], n_states: int) -> dict[str, Any]:
    return {
        "instance_id": spec["instance_id"], "base_id": spec["base_id"], "family": spec["family"],
        "size": spec["size"], "index": spec["index"], "aug": spec["aug"], "heldout": spec["heldout"],
        "seed": inst.seed, "n_vars": inst.n, "n_binary": len(inst.binary), "n_clauses": len(inst.clauses),
        "status": trace["status"], "nodes": trace["nodes"], "backtracks": trace["backtracks"],
        "propagations": trace["propagations"], "checks": trace["checks"], "limit": trace["limit"],
        "n_decisions": trace["n_decisions"], "n_states": n_states,
        "features": instance_features(inst).tolist(), "instance_json": dumps(inst),
    }
