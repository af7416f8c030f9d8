"""Typed, validated configuration tree.

One YAML file -> one frozen `Config`. Unknown keys and bad values are collected and raised together as a
single `ConfigError` that names every bad key path, so a user fixes a config in one round trip.
Command-line overrides are `key.path=value` strings; the value is parsed as YAML (so `3`, `0.5`, `true`,
`[a, b]` and `null` work) and then goes through the same validation as the file.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .atomic import stable_hash
from .kinds import ALL_KINDS, KINDS, OPTIONAL_KINDS, known_kind, known_learned, known_scorer

FAMILIES = ("nqueens", "coloring", "sudoku", "rb", "ksat")
SIZES = ("small", "medium", "large", "xlarge", "xxlarge")  # smallest first; per family: problems.SIZE_DEFAULTS
HEURISTICS = ("lex", "random", "mrv", "dom-deg", "dom-wdeg", "learned", "expert")
STAGES = ("generate", "train", "tune", "export", "evaluate", "report")

Family = Literal["nqueens", "coloring", "sudoku", "rb", "ksat"]
Size = Literal["small", "medium", "large", "xlarge", "xxlarge"]
Heuristic = Literal["lex", "random", "mrv", "dom-deg", "dom-wdeg", "learned", "expert"]
PlainHeuristic = Literal["lex", "random", "mrv", "dom-deg", "dom-wdeg"]  # needs no model and no probes
Propagation = Literal["fc", "mac"]
ValueOrder = Literal["lex", "min-conflicts"]
Stage = Literal["generate", "train", "tune", "export", "evaluate", "report"]
KindName = Annotated[str, AfterValidator(known_kind)]  # a kind declared in ray_pipeline.kinds
ScorerName = Annotated[str, AfterValidator(known_scorer)]  # ... that scores candidates
LearnedName = Annotated[str, AfterValidator(known_learned)]  # ... or an optional kind that does


class ConfigError(ValueError):
    """Every problem of a config at once, each with its key path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source} ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --------------------------------------------------------------------------------------------- run / ray
class RunSection(_Section):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.\-]+$", description="run directory name under root")
    root: str = Field("runs", description="directory holding runs, on the driver's disk (run dir: manifest, "
                                          "dataset, models, reports)")
    storage: Optional[str] = Field(None, description="URI every node reaches (s3://bucket/prefix, gs://..., or an "
                                                     "absolute shared path) for what Ray workers read and write: "
                                                     "Train checkpoints, Tune trials, the dataset copy "
                                                     "Ray Data reads; None = the run directory (one machine or a "
                                                     "shared run.root); see ray_pipeline/storage.py")
    seed: int = Field(0, ge=0, description="base seed; every instance seed derives from it")


class RaySection(_Section):
    address: Optional[str] = Field(None, description="join this cluster; None = embedded local Ray (or RAY_ADDRESS)")
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of the embedded local Ray; None = all")
    include_dashboard: bool = Field(True, description="needed by Ray Jobs and by Tune+Train (State API)")
    dashboard_host: str = "127.0.0.1"
    auth_mode: Literal["token", "disabled"] = "token"
    object_store_memory_mb: Optional[int] = Field(None, ge=75)
    progress_bars: Optional[bool] = Field(None, description="Ray Data progress bars; None = only on a terminal")


class TrackingSection(_Section):
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "ray-pipeline"
    tensorboard: bool = True


# --------------------------------------------------------------------------------------------- data
class FamilySpec(_Section):
    family: Family
    sizes: list[Size] = Field(min_length=1)
    count: int = Field(ge=1, description="base instances per size (before augmentation)")
    params: dict[str, float | int | bool | str] = Field(default_factory=dict, description="generator knobs")

    @model_validator(mode="after")
    def _sizes_of_family(self) -> "FamilySpec":
        # found here, naming the key, instead of in a Ray Data worker halfway through the generate stage
        from .problems.generators import SIZE_DEFAULTS

        missing = [z for z in self.sizes if z not in SIZE_DEFAULTS[self.family]]
        if missing:
            raise ValueError(f"{self.family} has no size {', '.join(missing)} (its sizes: "
                             f"{', '.join(SIZE_DEFAULTS[self.family])})")
        return self


class GenerateSection(_Section):
    families: list[FamilySpec] = Field(min_length=1)
    heldout: list[FamilySpec] = Field(default_factory=list, description="larger sizes, a generalization split")


class AugmentSection(_Section):
    factor: int = Field(1, ge=1, le=64, description="instances per base instance, the original included")


class TraceSection(_Section):
    heuristic: PlainHeuristic = "dom-wdeg"
    propagation: Propagation = "mac"
    node_limit: int = Field(20000, ge=1)
    # A safety valve only: a run that hits it is non-deterministic, so it is counted and reported.
    time_limit_s: float = Field(60.0, gt=0)
    max_records: int = Field(5000, ge=0, description="decision records kept per instance in decisions.parquet")


class LabelSection(_Section):
    states_per_instance: int = Field(6, ge=1)
    heldout_states_per_instance: Optional[int] = Field(
        None, ge=1, description="states labelled per held-out instance (its ranking metrics; the held-out split is "
        "evaluated by search, not trained on); None = states_per_instance")
    top_k: int = Field(8, ge=2, description="probe at most this many candidates, best by dom/wdeg")
    node_budget: int = Field(2000, ge=1, description="node budget of one probe; over it the cost is censored")
    min_candidates: int = Field(2, ge=2)
    max_depth: Optional[int] = Field(None, ge=0, description="sample only states at most this deep (the model "
                                     "is called near the root, see evaluate.learned.max_depth)")


class PurifySection(_Section):
    dedupe: bool = True
    balance: bool = True
    max_group_ratio: float = Field(3.0, ge=1.0, description="cap each (family,size) train group at ratio x median")


class SplitSection(_Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitSection":
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train+val+test must be 1, got {self.train + self.val + self.test:g}")
        return self


class DataSection(_Section):
    generate: GenerateSection
    augment: AugmentSection = AugmentSection()
    trace: TraceSection = TraceSection()
    label: LabelSection = LabelSection()
    purify: PurifySection = PurifySection()
    split: SplitSection = SplitSection()
    instances_per_block: int = Field(2, ge=1, description="instances per Ray Data block (one worker-actor call each)")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="quarantined instances tolerated, as a fraction")


# --------------------------------------------------------------------------------------------- models / train
class OptimSection(_Section):
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    early_stopping_patience: int = Field(5, ge=1)


class TeacherSection(_Section):
    hidden: int = Field(64, ge=4)
    layers: int = Field(2, ge=1, description="self-attention blocks over the candidates of a state")
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    optim: OptimSection = OptimSection()

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "TeacherSection":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class DistillSection(_Section):
    alpha: float = Field(0.7, ge=0, le=1, description="weight of T^2*KL(teacher||student); 1-alpha on CE")
    temperature: float = Field(2.0, gt=0)
    teachers: dict[str, float] = Field(default_factory=lambda: {"teacher": 1.0},
                                       description="teacher model name -> weight (probabilities averaged)")


class StudentSection(_Section):
    hidden: int = Field(32, ge=2)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    distill: DistillSection = DistillSection()
    optim: OptimSection = OptimSection()


class CostSection(_Section):
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    optim: OptimSection = OptimSection(epochs=60, batch_size=64, label_smoothing=0.0, early_stopping_patience=15)


class GraphSection(_Section):
    hidden: int = Field(48, ge=4)
    rounds: int = Field(3, ge=1, description="message-passing rounds over the state's constraint graph")
    dropout: float = Field(0.0, ge=0, lt=1)
    families: list[Family] = Field(
        default_factory=lambda: ["rb"], description="the families whose states it trains on: binary constraints "
        "only (a k-SAT state has no constraint graph here, ray_pipeline.graph); padded to their largest n")
    optim: OptimSection = OptimSection(lr=2e-3, batch_size=64, label_smoothing=0.0, epochs=20)

    @field_validator("families")
    @classmethod
    def _binary_only(cls, v: list[str]) -> list[str]:
        if not v or "ksat" in v:
            raise ValueError("give one or more families with binary constraints only (not ksat: clauses have no "
                             "constraint graph here)")
        return v


class TrainSection(_Section):
    num_workers: int = Field(2, ge=0, description="DDP workers; 0 = Ray Train local mode (in-process)")
    cpus_per_worker: float = Field(0.5, gt=0, description="leave CPUs for Ray Data ingest on small machines")
    use_gpu: bool = False
    mixed_precision: bool = Field(False, description="bf16/fp16 autocast; used only when use_gpu")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint")
    keep_checkpoints: int = Field(2, ge=1, description="best-K by validation metric, plus the last")
    nan_retries: int = Field(3, ge=0)
    nan_lr_factor: float = Field(0.5, gt=0, lt=1)
    worker_start_timeout_s: float = Field(120.0, gt=0, description="fail instead of waiting forever for workers")
    cache_shards: bool = Field(True, description="each worker reads its dataset shard once and serves later epochs "
                               "from memory (Ray Data's per-epoch start-up dominated small epochs); turn off when a "
                               "shard does not fit in a worker's memory")
    target: Literal["best", "soft", "binary"] = Field(
        "soft", description="scorer training target: a softmax over the state's candidates trained towards uniform "
        "over the cheapest ones (best) or softmax(-log(cost/min cost)/T) (soft); or binary: each candidate's own "
        "sigmoid of being one of the cheapest, distilled sigmoid to sigmoid, whose top value is the confidence "
        "calibration reads (a softmax splits it over tied-best candidates)")
    target_temperature: float = Field(0.5, gt=0, description="T of the soft target")
    families: Optional[list[Family]] = Field(None, description="train the scorers on these families' states only "
                                             "(a specialist); None = all families of the dataset")
    select_metric: Literal["val_log_regret", "val_top1", "val_loss"] = Field(
        "val_log_regret", description="checkpoint selection and early stopping of the scorers; log regret = "
        "log(cost of the chosen candidate / cheapest cost), what a wrong choice costs the search")
    models: list[KindName] = Field(
        default_factory=lambda: list(KINDS), description="which models the train stage builds; export and "
        "evaluate need the pipeline's (teacher, student, cost), a subset is for iterating on one model; the "
        "optional graph scorer is trained only when listed")
    teacher: TeacherSection = TeacherSection()
    student: StudentSection = StudentSection()
    cost: CostSection = CostSection()
    graph: GraphSection = GraphSection()

    @model_validator(mode="after")
    def _models(self) -> "TrainSection":
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models: give each of {', '.join(ALL_KINDS)} at most once, at least one")
        for m in self.models:  # a model distilled from teachers trains after them
            distill = getattr(getattr(self, m, None), "distill", None)
            for t in (distill.teachers if distill else {}):
                if t in self.models and self.models.index(t) > self.models.index(m):
                    raise ValueError(f"models: the {m} is distilled from the {t} (train.{m}.distill.teachers), "
                                     f"so the {t} comes first")
        return self

    def families_of(self, kind: str) -> Optional[list[str]]:
        """The families a scorer of `kind` trains on (None = all): a graph kind's own (train.<kind>.families:
        binary constraints only), every other scorer's train.families."""
        return list(getattr(self, kind).families) if ALL_KINDS[kind].graph else self.families


# --------------------------------------------------------------------------------------------- tune
class SearchDim(_Section):
    kind: Literal["loguniform", "uniform", "choice", "randint"]
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[list[float | int | str]] = None

    @model_validator(mode="after")
    def _shape(self) -> "SearchDim":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values'")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.kind} needs low < high")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


class TuneSection(_Section):
    enabled: bool = Field(False, description="run the sweep as part of `run`")
    model: ScorerName = "teacher"
    num_samples: int = Field(4, ge=1)
    max_t: int = Field(4, ge=1, description="ASHA: max epochs per trial")
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    max_concurrent_trials: int = Field(1, ge=1)
    trial_cpus: float = Field(0.1, gt=0, description="the trial driver; its Train workers reserve their own CPUs")
    num_workers: int = Field(2, ge=1)
    metric: str = "val_top1"
    mode: Literal["max", "min"] = "max"
    # keys are dotted paths inside the model section, e.g. "optim.lr", "hidden", "distill.alpha"
    space: dict[str, SearchDim] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------- evaluate / export
class LearnedSection(_Section):
    model: LearnedName = "student"
    top_k: int = Field(8, ge=1, description="score only the best K candidates by dom/wdeg")
    max_depth: Optional[int] = Field(0, ge=0, description="call the model only up to this depth (None = always): "
                                     "depth = positive branches above the decision, so 0 = every root-level choice; "
                                     "deeper decisions use dom/wdeg (pick it with `ray-pipeline bench learned`)")
    min_margin: float = Field(0.0, ge=0, description="keep dom/wdeg's choice unless the model scores another "
                              "candidate higher by more than this (score units; pick it with bench learned)")
    runtime: Literal["deployed", "native", "onnx", "onnx-int8", "torch"] = Field(
        "deployed", description="deployed = the file the export stage chose: the native MLP (scored inside the "
        "solver core) when it matches ONNX Runtime, else FP32 ONNX (export.stage.choose_files); for an optional "
        "kind (no ONNX export): its native file when the train stage wrote one, else PyTorch")

    def solver_kwargs(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "max_depth": self.max_depth, "min_margin": self.min_margin}


class ExpertSection(_Section):
    """The labeller run online (heuristic `expert`): at each decision up to max_depth, probe the dom/wdeg top-K
    with a budget each and branch on the cheapest. Its node ratio vs dom/wdeg is the ceiling of imitating these
    labels; its time shows what the probes cost. It is the ceiling of data.label's labels when its settings match
    them (top_k, node_budget; max_depth: where the labels were sampled); other settings measure another expert.
    `solve --heuristic expert` takes these defaults."""
    top_k: int = Field(8, ge=1)
    max_depth: Optional[int] = Field(1, ge=0, description="probe only up to this depth (None = always)")
    node_budget: int = Field(5000, ge=1, description="nodes per probe; over it the candidate counts as budget+1")
    max_instances: int = Field(20, ge=1, description="per split: the expert's probes cost far more than search; "
                               "it runs on the first instances of each split only")

    def solver_kwargs(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "max_depth": self.max_depth, "probe_budget": self.node_budget}


class EvaluateSection(_Section):
    heuristics: list[Heuristic] = Field(default_factory=lambda: ["lex", "mrv", "dom-deg", "dom-wdeg", "learned"])
    baseline: PlainHeuristic = "dom-wdeg"
    propagation: Propagation = "mac"
    node_limit: int = Field(50000, ge=1)
    time_limit_s: float = Field(30.0, gt=0)
    splits: list[Literal["test", "heldout"]] = Field(default_factory=lambda: ["test", "heldout"])
    max_instances: int = Field(40, ge=1, description="per split")
    repeats: int = Field(3, ge=1, description="interleaved timing rounds per instance; the minimum time is kept")
    files: list[str] = Field(default_factory=list, description="DIMACS .cnf / .col:K files to benchmark too")
    learned: LearnedSection = LearnedSection()
    expert: ExpertSection = ExpertSection()
    ece_bins: int = Field(15, ge=2)
    fresh_calibration: int = Field(0, ge=0, description="ECE also on fresh instances of the training mix, this many "
                                   "times the config's counts (evaluate/fresh.py), where the test split is too few "
                                   "instances to settle it (quick.yaml); 0: off")


class ExportSection(_Section):
    parity_atol: float = Field(1e-4, gt=0)
    native_atol: float = Field(1e-5, gt=0, description="the native MLP (model.native.npz) against ONNX Runtime FP32, "
                               "on every test row: over it, no native file is written or deployed")
    parity_rows: int = Field(512, ge=2)
    quantize_dynamic: bool = True
    quantize_static: bool = True
    calibration_rows: int = Field(256, ge=8)
    int8_max_top1_drop: float = Field(0.01, ge=0, description="INT8 within this top-1 drop of FP32 is reported as "
                                      "within tolerance (INT8 is never deployed by default: export.stage.choose_files)")
    prune_amounts: list[float] = Field(default_factory=lambda: [0.3, 0.5])
    latency_calls: int = Field(2000, ge=10)

    @field_validator("prune_amounts")
    @classmethod
    def _amounts(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not 0 < a < 1]
        if bad:
            raise ValueError(f"prune amounts must be in (0, 1), got {bad}")
        return v


class DebugSection(_Section):
    """Fault injection for the reliability suite. Off by default; never set in shipped configs."""

    fail_instance_every: Optional[int] = Field(None, ge=1, description="raise in generation of every Nth instance")
    segfault_instance: Optional[int] = Field(None, ge=0, description="kill the worker with SIGSEGV when it traces "
                                             "the instance of this ordinal (as a crash of the native core would)")
    nan_loss_at_step: Optional[int] = Field(None, ge=0)
    crash_worker_at_epoch: Optional[int] = Field(None, ge=0, description="kill rank 1 once at this epoch")
    sleep_per_epoch_s: float = Field(0.0, ge=0)


class LoopConfig(_Section):
    """What the driver hands every Ray Train worker: typed and validated again in the worker (it crosses a
    process boundary as a dict), so a missing or misspelt key fails there by name, not as a KeyError mid-epoch."""

    kind: KindName
    optim: OptimSection
    spec: dict[str, Any]  # the model spec (model.json) the network is built from and checkpoints carry
    seed: int
    score: str  # validation metric that selects checkpoints and stops early
    score_mode: Literal["max", "min"]
    nan_retries: int = Field(ge=0)
    nan_lr_factor: float = Field(gt=0, lt=1)
    mixed_precision: bool
    debug: DebugSection
    marker_dir: str
    run_name: str
    wandb_dir: str
    wandb_project: str
    distill: Optional[DistillSection] = None  # the kinds that learn from teachers (the student)
    cache_shards: bool = True
    teacher_files: dict[str, dict[str, str]] = Field(default_factory=dict)  # name -> file -> base64 (distill)


class Config(_Section):
    run: RunSection = RunSection()
    ray: RaySection = RaySection()
    tracking: TrackingSection = TrackingSection()
    stages: list[Stage] = Field(default_factory=lambda: ["generate", "train", "export", "evaluate", "report"])
    data: DataSection
    train: TrainSection = TrainSection()
    tune: TuneSection = TuneSection()
    evaluate: EvaluateSection = EvaluateSection()
    export: ExportSection = ExportSection()
    debug: DebugSection = DebugSection()

    @field_validator("stages")
    @classmethod
    def _stage_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"stages repeat: {v}")
        order = [s for s in STAGES if s in v]
        if order != v:
            raise ValueError(f"stages must keep the pipeline order {list(STAGES)}, got {v}")
        return v

    @model_validator(mode="after")
    def _fresh_mix(self) -> "Config":
        fams = self.train.families
        if self.evaluate.fresh_calibration and fams is not None and \
                not any(fs.family in fams for fs in self.data.generate.families):
            raise ValueError(f"evaluate.fresh_calibration: data.generate.families holds none of train.families "
                             f"{fams}, so there is no training mix to build again (set it to 0)")
        return self

    @model_validator(mode="after")
    def _learned_model_is_trained(self) -> "Config":
        m, runtime = self.evaluate.learned.model, self.evaluate.learned.runtime
        if m in OPTIONAL_KINDS:  # the pipeline's kinds are always trained; an optional one only when listed
            if m not in self.train.models:
                raise ValueError(f"evaluate.learned.model: {m!r} is an optional kind: list it in train.models "
                                 f"(now {self.train.models}) so the train stage builds it")
            if runtime.startswith("onnx"):
                raise ValueError(f"evaluate.learned.runtime: {runtime!r}: the {m} kind has no ONNX export "
                                 "(deployed, native or torch)")
        return self

    # ----------------------------------------------------------------------------------- helpers
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def section_hash(self, *paths: str, unread: tuple[str, ...] = ()) -> str:
        """Hash of the given dotted sections (plus the seed): what a stage's output depends on; the dotted keys in
        `unread` count as unset."""
        d = self.to_dict()
        for u in unread:
            *parent, last = u.split(".")
            try:
                node = _get_path(d, parent)
            except (KeyError, IndexError, TypeError, ValueError):  # no such section: the tune stage names it
                continue
            if isinstance(node, dict) and last in node:
                node[last] = None
        picked = {p: _get_path(d, p.split(".")) for p in sorted(paths)}
        picked["run.seed"] = self.run.seed
        return stable_hash(picked)


def _get_path(d: Any, parts: list[str]) -> Any:
    for p in parts:
        d = d[int(p)] if isinstance(d, list) else d[p]
    return d


# --------------------------------------------------------------------------------------------- loading
def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError("overrides", [f"{text!r}: expected key.path=value"])
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("overrides", [f"{text!r}: empty key path"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError("overrides", [f"{key}: value {raw!r} is not valid YAML ({e.__class__.__name__})"]) from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `key.path=value` in a copy of the raw dict. List items are addressed by index."""
    out = copy.deepcopy(raw)
    problems: list[str] = []
    for text in overrides:
        try:
            parts, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        node: Any = out
        path = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            path.append(part)
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    problems.append(f"{'.'.join(path)}: no list item {part!r} (list has {len(node)})")
                    break
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value  # unknown keys are caught by validation, with the rest
                else:
                    node = node.setdefault(part, {})
            else:
                problems.append(f"{'.'.join(path[:-1])}: is a value, cannot set {part!r} inside it")
                break
    if problems:
        raise ConfigError("overrides", problems)
    return out


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif e["type"] == "missing":
            problems.append(f"{loc}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg} (got {e.get('input')!r})")
    return problems


def validate(raw: Any, source: str = "<config>") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"<root>: expected a mapping of sections, got {type(raw).__name__}"])
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, _format_errors(e)) from None


def load_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["<file>: no such config file"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(str(path), [f"<file>: YAML syntax error at {where}: {getattr(e, 'problem', e)}"]) from None
    return raw if raw is not None else {}


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    raw = load_raw(path)
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(str(path), ["<root>: expected a mapping of sections"])
        raw = apply_overrides(raw, overrides)
    return validate(raw, source=str(path) + (f" + {len(overrides)} override(s)" if overrides else ""))
