"""Drift check: are these instances like the ones a model was trained on?

Compares, feature by feature, the given instances with a stored summary of the model's training data:
- candidate features: the decision states a dom/wdeg search visits on each instance (node and time limit),
  with the dataset's top-K candidates and data.label.max_depth -- the way the dataset's states were sampled
  (the learned heuristic's scorer slot is filled with one that keeps dom/wdeg's choice and records its input),
  so a difference is a difference of instances, not of how they were looked at;
- instance features: one row per instance (the cost predictor's input); with a handful of files this side has
  little power (one instance can never be "significant"), the candidate side carries the verdict.

The training side is a compact summary, not the dataset: per feature the row count, min/max/mean/std and a
sorted sample of at most SKETCH values at evenly spaced quantiles. It is computed from the train split (the
model's train.families) the first time a model is checked and cached next to the model as drift_summary.json,
keyed by the model's dataset hash and feature version (a different dataset recomputes it).

Per feature: the two-sample Kolmogorov-Smirnov statistic D and its asymptotic p-value (implemented here: it is
short, and scipy is not a dependency of the package; tests/unit/test_drift.py checks it against
scipy.stats). The sketch stands in for the training sample with n = its length, which only makes p larger
(conservative). A feature is flagged when p < alpha / features (Bonferroni over the features compared) *and*
D >= min_stat: rows of one instance are not independent and a tiny, harmless shift over thousands of rows is
"significant", so the effect size has to be large too. Pure: no Ray; the CLI and the web app call `check`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import atomic
from .features import FEATURE_VERSION, INPUT_FEATURES, INSTANCE_FEATURES
from .kinds import scorers

SUMMARY_FILE = "drift_summary.json"
SKETCH = 512
ALPHA = 0.01
MIN_STAT = 0.5
IN_DISTRIBUTION = "in distribution"
OUTSIDE = "these features are outside what the model saw"


class DriftError(ValueError):
    """Bad input to the drift check (model, run or file); the message names it."""


# ------------------------------------------------------------------------------------------ statistics
def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (limit of sqrt(n) * D_n): the asymptotic KS p-value."""
    if x <= 0.0:
        return 1.0
    if x < 1.0:
        # the theta-function form converges fast for small x, where the alternating series does not
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi ** 2 / (8 * x * x)) for k in range(1, 8))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / x * s))
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return max(0.0, min(1.0, 2.0 * s))


def ks_2samp(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
             sizes: Optional[tuple[int, int]] = None) -> tuple[float, float]:
    """Two-sided two-sample KS: (D = sup |F_a - F_b|, asymptotic p-value with n_eff = n*m/(n+m)).

    `sizes` overrides (n, m) in the p-value: the number of independent observations when a sample stands for
    fewer of them (a sketch of a larger sample, rows clustered by instance)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    both = np.concatenate([a, b])
    # ECDFs evaluated at every observed value; side="right" counts ties on both sides alike
    d = float(np.max(np.abs(np.searchsorted(a, both, side="right") / n - np.searchsorted(b, both, side="right") / m)))
    if sizes is not None:
        n, m = max(1, sizes[0]), max(1, sizes[1])
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


# ------------------------------------------------------------------------------------------ summaries
def summarize_columns(x: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Per-feature summary of [rows, len(names)]: counts, range, moments and a sorted quantile sketch."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(names))
    out: dict[str, Any] = {"rows": int(x.shape[0]), "features": {}}
    for j, name in enumerate(names):
        col = x[:, j][np.isfinite(x[:, j])]
        if len(col) == 0:
            out["features"][name] = {"n": 0, "sketch": []}
            continue
        if len(col) > SKETCH:
            sketch = np.quantile(col, (np.arange(SKETCH) + 0.5) / SKETCH, method="inverted_cdf")
        else:
            sketch = np.sort(col)
        out["features"][name] = {"n": int(len(col)), "min": float(col.min()), "max": float(col.max()),
                                 "mean": float(col.mean()), "std": float(col.std()),
                                 "sketch": [float(v) for v in sketch]}
    return out


@dataclass(frozen=True)
class ModelRef:
    """A model of a run: its directory, the run directory, and the scorer file the run deploys."""
    name: str
    dir: Path
    run: Path
    spec: dict[str, Any]
    scorer_file: Optional[Path]


def resolve_model(path: str | Path) -> ModelRef:
    """`runs/quick/models/student`, or a file in it (model.onnx, model.int8.onnx, model.pt)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DriftError(f"{p}: no such model (give runs/<run>/models/<name> or a model file in it)")
    mdir = p if p.is_dir() else p.parent
    spec_file = mdir / "model.json"
    if not spec_file.is_file():
        raise DriftError(f"{spec_file}: missing model spec (not a model directory of a run)")
    try:
        spec = json.loads(spec_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DriftError(f"{spec_file}: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != "ray_pipeline.model":
        raise DriftError(f"{spec_file}: not a ray_pipeline model spec")
    if spec.get("feature_version") != FEATURE_VERSION:
        raise DriftError(f"{spec_file}: built for features {spec.get('feature_version')!r}, this code has "
                         f"{FEATURE_VERSION!r}")
    scorer_file = p if p.is_file() else deployed_file(mdir)
    return ModelRef(mdir.name, mdir.resolve(), mdir.resolve().parent.parent, spec, scorer_file)


def deployed_file(model_dir: Path) -> Optional[Path]:
    """The file the export stage deployed (native MLP, INT8 or FP32 ONNX), else model.onnx, else None."""
    summary = model_dir.parent / "export_summary.json"
    deploy = None
    if summary.is_file():
        try:
            deploy = (json.loads(summary.read_text()).get(model_dir.name) or {}).get("deploy")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            deploy = None
    for name in ([deploy] if deploy else []) + ["model.onnx"]:
        f = model_dir / name
        if f.is_file():
            return f
    return None


def train_families(ref: ModelRef) -> Optional[list[str]]:
    """The families the model trained on (train.families of the run's manifest; None = all)."""
    try:
        cfg = json.loads((ref.run / "manifest.json").read_text()).get("config", {})
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    fam = (cfg.get("train") or {}).get("families")
    return list(fam) if fam else None


def training_summary(ref: ModelRef) -> dict[str, Any]:
    """The model's training-data summary: read from the cache next to the model, else computed and cached."""
    cache = ref.dir / SUMMARY_FILE
    key = {"dataset_hash": ref.spec.get("dataset_hash"), "feature_version": FEATURE_VERSION, "version": 2}
    if cache.is_file():
        try:
            s = json.loads(cache.read_text())
            if all(s.get(k) == v for k, v in key.items()):
                return s
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a damaged cache is recomputed, like any damaged artifact
    import pyarrow as pa
    import pyarrow.compute as pc

    from .data import dataset as ds
    from .paths import RunPaths

    path = RunPaths(ref.run).dataset
    try:
        ds.read_manifest(path)
        states = ds.read_states(path, "train")
        inst = ds.read_table(path, "instances.parquet", ["split", "family", "features"])
    except ds.DatasetError as e:
        raise DriftError(str(e)) from None
    families = train_families(ref)
    inst = inst.filter(pc.equal(inst["split"], "train"))
    if families:
        states = states.filter(pc.is_in(states["family"], value_set=pa.array(families)))
        inst = inst.filter(pc.is_in(inst["family"], value_set=pa.array(families)))
    inst_x = np.asarray(inst["features"].to_pylist(), dtype=np.float64).reshape(-1, len(INSTANCE_FEATURES))
    cand = summarize_columns(ds.flat_features(states), INPUT_FEATURES)
    cand["instances"] = len(set(states["instance_id"].to_pylist()))  # rows cluster by instance
    s = {"format": "ray_pipeline.drift_summary", **key, "families": families, "source": str(path),
         "candidate": cand, "instance": summarize_columns(inst_x, INSTANCE_FEATURES)}
    atomic.write_json(cache, s)
    return s


# ------------------------------------------------------------------------------------------ the new side
class DomWdegRecorder:
    """A scorer that prefers dom/wdeg's choice (the candidates come best-first by dom/wdeg) and keeps a uniform
    sample (reservoir) of the feature rows of the decisions it sees: the learned heuristic's slot replays the
    dataset's dom/wdeg trace and collects its decision states, with the dataset's top-K and depth."""

    def __init__(self, max_calls: int = 300, seed: int = 0):
        self.max_calls, self.calls = max_calls, 0
        self.rng = np.random.default_rng(seed)
        self.rows: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        row = np.array(x, dtype=np.float32, copy=True)
        if len(self.rows) < self.max_calls:
            self.rows.append(row)
        else:
            j = int(self.rng.integers(self.calls))
            if j < self.max_calls:
                self.rows[j] = row
        return np.arange(len(x), 0, -1, dtype=np.float32)  # strictly decreasing: index 0 wins


def label_setting(ref: ModelRef) -> dict[str, Any]:
    """How the training states were sampled: the dataset's top-K and data.label.max_depth of the run."""
    setting: dict[str, Any] = {"top_k": 8, "max_depth": None}
    try:
        setting["top_k"] = int(json.loads((ref.run / "datasets" / "main" / "manifest.json").read_text())["top_k"])
        cfg = json.loads((ref.run / "manifest.json").read_text()).get("config", {})
        setting["max_depth"] = ((cfg.get("data") or {}).get("label") or {}).get("max_depth")
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return setting


def observe(instances: Sequence[Any], setting: dict[str, Any], node_limit: int = 20_000,
            time_limit: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate rows of the decision states a dom/wdeg search visits (as the dataset samples them), the
    instance index of each row, and each instance's features."""
    from .features import N_INPUT, instance_features
    from .solver import Solver

    cand, groups, inst_rows = [], [], []
    for i, inst in enumerate(instances):
        rec = DomWdegRecorder(seed=i)
        Solver(inst, heuristic="learned", propagation="mac", scorer=rec, top_k=setting["top_k"],
               max_depth=setting["max_depth"], node_limit=node_limit, time_limit=time_limit).solve()
        cand.extend(rec.rows)
        groups.extend([i] * sum(len(r) for r in rec.rows))
        inst_rows.append(instance_features(inst))
    x = np.concatenate(cand) if cand else np.zeros((0, N_INPUT), dtype=np.float32)
    return x, np.asarray(groups, dtype=np.int64), np.asarray(inst_rows, dtype=np.float64).reshape(-1, len(INSTANCE_FEATURES))


# ------------------------------------------------------------------------------------------ comparison
def _per_instance(col: np.ndarray, groups: np.ndarray) -> Optional[np.ndarray]:
    """One value per instance if the feature is constant within every instance (log_n, is_clausal, ...)."""
    vals = []
    for g in np.unique(groups):
        v = col[groups == g]
        if v.min() != v.max():
            return None
        vals.append(v[0])
    return np.asarray(vals)


def compare(summary: dict[str, Any], cand_x: np.ndarray, inst_x: np.ndarray, alpha: float = ALPHA,
            min_stat: float = MIN_STAT, groups: Optional[np.ndarray] = None) -> dict[str, Any]:
    """KS per feature and the verdict. `groups` (instance index of each candidate row): a feature constant
    within each instance counts one observation per instance, not one per row -- otherwise a single
    instance's point mass would look like overwhelming evidence."""
    rows: list[dict[str, Any]] = []
    for group, x, names in (("candidate", cand_x, INPUT_FEATURES), ("instance", inst_x, INSTANCE_FEATURES)):
        feats = summary[group]["features"]
        for j, name in enumerate(names):
            ref = feats.get(name) or {}
            new = x[:, j] if len(x) else np.zeros(0)
            ok = np.isfinite(new)
            new = new[ok]
            if not ref.get("sketch") or len(new) == 0:
                continue
            sizes, per_inst = None, None
            if group == "candidate" and groups is not None and len(groups) == len(x):
                per_inst = _per_instance(new, groups[ok])
            if per_inst is not None:
                n_train = summary[group].get("instances") or len(ref["sketch"])
                sizes = (min(len(ref["sketch"]), n_train), len(per_inst))
            d, p = ks_2samp(ref["sketch"], new, sizes)
            rows.append({"group": group, "feature": name, "n_train": ref["n"], "n_new": int(len(new)),
                         "per_instance": per_inst is not None,
                         "train_min": ref["min"], "train_max": ref["max"], "train_mean": ref["mean"],
                         "new_min": float(new.min()), "new_max": float(new.max()), "new_mean": float(new.mean()),
                         "ks": round(d, 6), "p": p})
    threshold = alpha / max(1, len(rows))
    for r in rows:
        r["outside"] = bool(r["p"] < threshold and r["ks"] >= min_stat)
    flagged = [f"{r['group']}:{r['feature']}" for r in rows if r["outside"]]
    verdict = IN_DISTRIBUTION if not flagged else f"{OUTSIDE}: {', '.join(flagged)}"
    return {"verdict": verdict, "in_distribution": not flagged, "flagged": flagged, "alpha": alpha,
            "p_threshold": threshold, "min_stat": min_stat, "features": rows,
            "rows": {"candidate": int(len(cand_x)), "instance": int(len(inst_x))}}


def check(ref: ModelRef, instances: Sequence[Any], alpha: float = ALPHA, min_stat: float = MIN_STAT,
          node_limit: int = 20_000, time_limit: float = 10.0) -> dict[str, Any]:
    """The whole check for a model and some instances (the CLI and the web app call this)."""
    if ref.spec.get("kind") not in [k.name for k in scorers()]:
        raise DriftError(f"{ref.dir}: a {ref.spec.get('kind')} model scores no candidates; give a "
                         f"{' or '.join(k.name for k in scorers())}")
    summary = training_summary(ref)
    setting = label_setting(ref)
    cand_x, groups, inst_x = observe(instances, setting, node_limit, time_limit)
    out = compare(summary, cand_x, inst_x, alpha, min_stat, groups)
    out.update({"model": str(ref.dir), "setting": setting, "families": summary.get("families"),
                "instances": [getattr(i, "name", "?") for i in instances]})
    return out


# ------------------------------------------------------------------------------------------ command
def add_arguments(p: Any) -> None:
    p.add_argument("--model", required=True, help="runs/<run>/models/<name> (or a model file in it)")
    p.add_argument("files", nargs="+", metavar="FILE", help="instances: .cnf, .col:K, .json")
    p.add_argument("--alpha", type=float, default=ALPHA, help="family-wise significance (Bonferroni over features)")
    p.add_argument("--min-stat", type=float, default=MIN_STAT, help="smallest KS statistic that counts as drift")
    p.add_argument("--node-limit", type=int, default=20_000, help="per instance, for the dom/wdeg search sampled")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per instance")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: Any) -> int:
    """Exit 0: in distribution; 1: some features outside what the model saw; 2: bad input."""
    import sys

    from .problems import InstanceError, read_instance

    try:
        if not 0 < args.alpha < 1 or not 0 <= args.min_stat <= 1:
            raise DriftError(f"--alpha must be in (0, 1) and --min-stat in [0, 1], got {args.alpha}, {args.min_stat}")
        if args.node_limit < 1 or args.time_limit <= 0:
            raise DriftError("--node-limit and --time-limit must be positive")
        ref = resolve_model(args.model)
        try:
            insts = [read_instance(f) for f in args.files]
        except InstanceError as e:
            raise DriftError(str(e)) from None
        out = check(ref, insts, args.alpha, args.min_stat, args.node_limit, args.time_limit)
    except DriftError as e:
        if args.json:
            print(json.dumps({"status": "ERROR", "error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"model {out['model']} (trained on {out['families'] or 'all families'}); "
              f"{out['rows']['candidate']} candidate rows from {len(insts)} instance(s)")
        print(f"{'group':<10} {'feature':<20} {'KS':>6} {'p':>9}  train range -> new range")
        for r in out["features"]:
            mark = "  <-- outside" if r["outside"] else ""
            print(f"{r['group']:<10} {r['feature']:<20} {r['ks']:6.3f} {r['p']:9.2e}  "
                  f"[{r['train_min']:.3g}, {r['train_max']:.3g}] -> [{r['new_min']:.3g}, {r['new_max']:.3g}]{mark}")
        print(f"verdict: {out['verdict']}")
    return 0 if out["in_distribution"] else 1
