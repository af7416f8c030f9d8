"""The model kinds, declared once: every stage (build, train, select, export, score) reads the declaration
instead of testing the kind's name (torchtitan's TrainSpec is the model).

Torch-free at import time (the solver's ONNX scorer reads it): networks, losses and metrics are imported inside
the functions that use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import ModelError
from .features import INPUT_FEATURES, INSTANCE_FEATURES


@dataclass(frozen=True)
class Kind:
    name: str
    features: tuple[str, ...]  # input feature names, in order (stored in model.json and the ONNX metadata)
    norm_key: str  # which normalisation of the dataset manifest (`norm`) the network embeds
    hparams: tuple[str, ...]  # config keys of train.<kind> the network is built from
    network: Callable[[dict[str, Any], dict[str, list[float]]], Any]  # (hparams, norm) -> torch.nn.Module
    # a variable scorer (scores a state's candidates, ranking metrics) or a regressor (cost targets)
    scorer: bool
    # scorers only: True = takes one state's whole candidate set [batch, candidates, F] + mask (attention over
    # the candidates), False = scores candidate rows [rows, F] independently
    set_input: bool = False
    # the scorer the solver calls during search: exported for deployment, calibrated, benchmarked, and the
    # subject of the report's headline (exactly one kind)
    deployed: bool = False
    # scorers: the kind whose test metrics the report sets this one against (the student's teacher)
    compare_to: Optional[str] = None
    description: str = ""  # what the model is, one paragraph (model card, report)
    # the checkpoint-selection metric and its direction; None = train.select_metric
    select: Optional[tuple[str, str]] = None
    quantize: bool = True  # export INT8 variants (the teacher is never deployed in the search loop)
    # a plain MLP the solver core evaluates itself: the export writes model.native.npz (solver.policy)
    native: bool = False
    # scorers: also reads the state's constraint graph (ray_pipeline.graph): its datasets replay the trace to
    # each state, and in the search it is given the solver's state, not only the candidates' rows
    graph: bool = False

    def example_inputs(self, batch: int = 2, candidates: int = 3):
        """Inputs for ONNX export (torch tensors): batch >= 2, or the exporter specialises the batch size."""
        import torch

        x = torch.zeros(batch, candidates, len(self.features)) if self.set_input else \
            torch.zeros(batch, len(self.features))
        return (x, torch.ones(batch, candidates, dtype=torch.bool)) if self.set_input else (x,)

    def onnx_dynamic_shapes(self):
        return ({0: "batch", 1: "candidates"}, {0: "batch", 1: "candidates"}) if self.set_input else ({0: "batch"},)

    def onnx_names(self) -> tuple[list[str], list[str]]:
        return (["x", "mask"] if self.set_input else ["x"]), (["scores"] if self.scorer else ["cost"])

    def forward(self, model, x, mask=None):
        """Scores of candidate rows (scorers) or [log nodes, log time] per instance (regressor), whatever the
        network's input layout: [rows, F] rows of one or more states, with `mask` for padded sets."""
        if not self.scorer:
            return model(x)
        if mask is None:  # rows of one state
            return model(x.unsqueeze(0)).squeeze(0) if self.set_input else model(x)
        return model(x, mask)

    def batch_scores(self, model, batch: dict[str, Any]):
        """Scores [B, K] of a padded batch of states (`x`, `mask`, and the graph columns of graph kinds)."""
        if self.graph:
            return model(batch["x"], batch["mask"].bool(), *(batch[k] for k in GRAPH_COLUMNS))
        return model(batch["x"], batch["mask"].bool())

    def loss_and_sums(self, model, batch: dict[str, Any], c, train: bool):
        """(loss, validation sums) of one batch; `c` is the worker's LoopConfig."""
        from .train import losses, metrics

        if not self.scorer:
            pred = model(batch["x"])
            return losses.regression(pred, batch["y"]), (metrics.regression_sums(pred, batch["y"]) if not train else {})
        mask, target, label = batch["mask"].bool(), batch["target"], batch["label"]
        scores = self.batch_scores(model, batch)
        eps = c.optim.label_smoothing if train else 0.0
        d = c.distill
        binary = c.spec.get("scores") == "binary"
        if d is not None and d.teachers:  # the kinds that learn from teachers (the student)
            logits, weights = [batch[f"t_{n}"] for n in d.teachers], list(d.teachers.values())
            if binary:
                p_t = losses.teacher_probs_binary(logits, weights, d.temperature)
                loss = losses.distill_binary(scores, mask, label, p_t, d.alpha, d.temperature, eps)
            else:
                p_t = losses.teacher_probs(logits, weights, mask, d.temperature)
                loss = losses.distill(scores, mask, label, p_t, d.alpha, d.temperature, eps)
        else:
            loss = (losses.binary_ce if binary else losses.listwise_ce)(scores, mask, label, eps)
        return loss, (metrics.ranking_sums(scores, mask, target, batch.get("costs")) if not train else {})

    def metric_sum_keys(self) -> list[str]:
        """The validation sums every worker all-reduces (identical keys on every rank)."""
        if not self.scorer:
            return sorted(f"{p}{j}" for p in ("n", "ae", "se", "y", "yy", "ape") for j in range(len(COST_TARGETS)))
        return ["n", "top1", "top3", "top5", "mrr", "baseline_top1", "log_regret", "baseline_log_regret"]

    def finish_metrics(self, sums: dict[str, float], prefix: str) -> dict[str, float]:
        from .train import metrics

        if not self.scorer:
            return metrics.finish_regression(sums, COST_TARGETS, prefix=prefix)
        return metrics.finish_ranking(sums, prefix=prefix)


COST_TARGETS = ("log_nodes", "log_time")
# a graph kind's extra batch columns, in the order its network takes them (ray_pipeline.graph, padded to N nodes):
# node features [B, N, F_node], edge features [B, N, N, F_edge], adjacency [B, N, N], candidate nodes [B, K]
GRAPH_COLUMNS = ("g_nodes", "g_edges", "g_adj", "g_cand")


def _teacher(h, norm):
    from .models.nets import TeacherScorer

    return TeacherScorer(len(INPUT_FEATURES), h["hidden"], h["layers"], h["heads"], h["dropout"], norm["mean"],
                         norm["std"])


def _student(h, norm):
    from .models.nets import StudentScorer

    return StudentScorer(len(INPUT_FEATURES), h["hidden"], h["layers"], h["dropout"], norm["mean"], norm["std"])


def _cost(h, norm):
    from .models.nets import CostPredictor

    return CostPredictor(len(INSTANCE_FEATURES), h["hidden"], h["layers"], h["dropout"], norm["mean"], norm["std"])


def _graph(h, norm):
    from .graph import EDGE_FEATURES, NODE_FEATURES
    from .models.nets import GraphScorer

    return GraphScorer(len(INPUT_FEATURES), len(NODE_FEATURES), len(EDGE_FEATURES), h["hidden"], h["rounds"],
                       h["dropout"], norm["mean"], norm["std"])


# In training order: the student distils the teacher, so the teacher comes first.
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("teacher", INPUT_FEATURES, "input", ("hidden", "layers", "heads", "dropout"), _teacher, scorer=True,
         set_input=True, quantize=False,
         description="Variable scorer (teacher): self-attention over the candidates of a decision state, one score "
                     "per candidate; trained on strong-branching-style probe labels (listwise, or per candidate with "
                     "train.target binary: model.json's scores says which)."),
    Kind("student", INPUT_FEATURES, "input", ("hidden", "layers", "dropout"), _student, scorer=True, native=True,
         deployed=True, compare_to="teacher",
         description="Variable scorer (student): a small per-candidate MLP distilled from the teacher "
                     "(alpha*T^2*KL + (1-alpha)*CE, per candidate with train.target binary); the model the solver calls "
                     "during search."),
    Kind("cost", INSTANCE_FEATURES, "instance", ("hidden", "layers", "dropout"), _cost, scorer=False,
         select=("val_loss", "min"),
         description="Cost predictor: instance features -> log1p(nodes) and log(seconds) of the baseline solver "
                     "(MAC + dom/wdeg)."),
)}
# Trained only when train.models lists them. Export, evaluate, report and the Model Explorer take the pipeline's
# KINDS and need none of these (the Control Center lists these too when a run has them); the evaluate stage runs
# one as the learned heuristic when evaluate.learned.model names it (the export stage then stores the setting in
# its native file), and the benchmarks take any of them with --model.
OPTIONAL_KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("graph", INPUT_FEATURES, "input", ("hidden", "rounds", "dropout"), _graph, scorer=True, set_input=True,
         graph=True, quantize=False,
         description="Variable scorer on the state's constraint graph: message passing over the open variables and "
                     "the binary constraints between them (current tightness, weights, supports), each candidate "
                     "scored from its node and its feature row; binary-constraint families only (train.graph)."),
)}
ALL_KINDS: dict[str, Kind] = {**KINDS, **OPTIONAL_KINDS}


def scorers() -> list[Kind]:
    """The pipeline's variable scorers, in training order."""
    return [k for k in KINDS.values() if k.scorer]


def deployed() -> Kind:
    """The scorer the solver calls during search (declared `deployed`)."""
    return _one([k for k in KINDS.values() if k.deployed], "deployed=True")


def cost_predictor() -> Kind:
    """The regressor of instance cost (the one kind that is not a scorer)."""
    return _one([k for k in KINDS.values() if not k.scorer], "scorer=False")


def top1_ratio_key() -> str:
    """The train summary's headline: the deployed scorer's test top-1 over the kind it is compared to."""
    d = deployed()
    return f"{d.name}_vs_{d.compare_to}_top1"


def _one(found: list[Kind], what: str) -> Kind:
    if len(found) != 1:
        raise ModelError(f"kinds: exactly one kind must be declared with {what}, found {[k.name for k in found]}")
    return found[0]


def known_kind(name: str) -> str:
    """A pydantic validator: `name` is a declared kind."""
    if name not in ALL_KINDS:
        raise ValueError(f"unknown model kind {name!r} (known: {', '.join(ALL_KINDS)})")
    return name


def known_scorer(name: str) -> str:
    """A pydantic validator: `name` is a declared variable scorer of the pipeline's own."""
    if known_kind(name) in OPTIONAL_KINDS:
        raise ValueError(f"{name!r} is an optional kind; this key takes one of the pipeline's scorers "
                         f"({', '.join(k.name for k in scorers())})")
    return _scorer_among(name, KINDS)


def known_learned(name: str) -> str:
    """A pydantic validator: `name` is a variable scorer the learned heuristic can run (the deployed one, its
    teacher, or an optional scorer such as the graph scorer, which the solver core runs from its native file)."""
    return _scorer_among(known_kind(name), ALL_KINDS)


def _scorer_among(name: str, kinds: dict[str, Kind]) -> str:
    if not kinds[name].scorer:
        raise ValueError(f"{name!r} is not a variable scorer (scorers: "
                         f"{', '.join(k.name for k in kinds.values() if k.scorer)})")
    return name


def kind_of(name: Any, source: str = "model") -> Kind:
    try:
        return ALL_KINDS[name]
    except (KeyError, TypeError):
        raise ModelError(f"{source}: unknown model kind {name!r} (known: {', '.join(ALL_KINDS)})") from None
