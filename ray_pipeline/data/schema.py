"""Parquet schemas of the dataset (the data contract between `generate` and every later stage).

states_<split>.parquet   one row per labelled decision state (split = train | val | test | heldout)
  state_id        "<instance_id>/<decision:06d>"
  instance_id     instance this state comes from; base_id = instance before augmentation (splits use it)
  family, size    problem family and size bucket
  split           train | val | test | heldout
  decision, depth index of the decision in the trace, and its depth in the search tree
  n_cands         candidates probed (<= label.top_k), listed best-first by dom/wdeg (index 0 = dom/wdeg's choice)
  candidates      their variable indices
  features        n_cands x len(INPUT_FEATURES) float32, raw (normalisation lives in manifest.json and models)
  costs           probe cost per candidate: nodes to finish the subproblem branching on it first
  censored        cost hit label.node_budget (stored as budget+1)
  best            index of the cheapest candidate (first among ties); n_best = number of ties
instances.parquet        one row per instance: ids, split, seed, sizes, baseline solve outcome (status, nodes,
                         backtracks, propagations, checks, limit), instance features, the instance as JSON
decisions.parquet        the trace: one row per decision (capped per instance): depth, candidates, choice,
                         subtree size and whether it led to a solution
errors.parquet           quarantined instances: id, seed, step, message
timings.parquet          wall-clock per instance and step (the only file that differs between identical runs)
"""
from __future__ import annotations

import json

import pyarrow as pa

from ..features import CANDIDATE_FEATURES, FEATURE_VERSION, INPUT_FEATURES, INSTANCE_FEATURES, STATE_FEATURES

SPLITS = ("train", "val", "test", "heldout")

STATES = pa.schema([
    ("state_id", pa.string()), ("instance_id", pa.string()), ("base_id", pa.string()), ("family", pa.string()),
    ("size", pa.string()), ("split", pa.string()), ("decision", pa.int32()), ("depth", pa.int32()),
    ("n_cands", pa.int32()), ("candidates", pa.list_(pa.int32())), ("features", pa.list_(pa.list_(pa.float32()))),
    ("costs", pa.list_(pa.float32())), ("censored", pa.list_(pa.bool_())), ("best", pa.int32()),
    ("n_best", pa.int32()),
])
INSTANCES = pa.schema([
    ("instance_id", pa.string()), ("base_id", pa.string()), ("family", pa.string()), ("size", pa.string()),
    ("index", pa.int64()), ("aug", pa.int32()), ("heldout", pa.bool_()), ("split", pa.string()),
    ("seed", pa.int64()), ("n_vars", pa.int32()), ("n_binary", pa.int32()), ("n_clauses", pa.int32()),
    ("status", pa.string()), ("nodes", pa.int64()), ("backtracks", pa.int64()), ("propagations", pa.int64()),
    ("checks", pa.int64()), ("limit", pa.string()), ("n_decisions", pa.int64()), ("n_states", pa.int32()),
    ("features", pa.list_(pa.float32())), ("instance_json", pa.string()),
])
DECISIONS = pa.schema([
    ("instance_id", pa.string()), ("decision", pa.int32()), ("depth", pa.int32()), ("n_cands", pa.int32()),
    ("chosen", pa.int32()), ("subtree_nodes", pa.int64()), ("solved", pa.bool_()),
])
ERRORS = pa.schema([
    ("instance_id", pa.string()), ("ordinal", pa.int64()), ("family", pa.string()), ("size", pa.string()),
    ("index", pa.int64()), ("aug", pa.int32()), ("seed", pa.int64()), ("step", pa.string()),
    ("message", pa.string()),
])
TIMINGS = pa.schema([
    ("instance_id", pa.string()), ("node_id", pa.string()), ("generate_s", pa.float64()), ("trace_s", pa.float64()),
    ("label_s", pa.float64()), ("probes", pa.int64()), ("probe_nodes", pa.int64()),
])


def with_feature_metadata(schema: pa.Schema) -> pa.Schema:
    return schema.with_metadata({
        "feature_version": FEATURE_VERSION,
        "input_features": json.dumps(list(INPUT_FEATURES)),
        "candidate_features": json.dumps(list(CANDIDATE_FEATURES)),
        "state_features": json.dumps(list(STATE_FEATURES)),
        "instance_features": json.dumps(list(INSTANCE_FEATURES)),
    })
