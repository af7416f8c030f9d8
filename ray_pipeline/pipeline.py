"""Stage orchestration: which stages run, in what order, and which can be skipped (resume).

Each stage is a function `run(ctx) -> StageResult` in its own module, imported only when it runs.
The manifest decides skipping: same config hash and same input hash as a finished run -> skipped.
"""
from __future__ import annotations

import importlib
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from .config import STAGES, Config, stable_hash
from .console import stage_event
from .learned_setting import CONFIG_KEYS as LEARNED_SETTING_KEYS
from .manifest import Manifest
from .paths import RunPaths

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    name: str
    config_keys: tuple[str, ...]  # config sections the stage's output depends on
    inputs: tuple[str, ...]  # stages whose outputs it reads
    impl: Any  # "module:function" (or a callable, in tests)
    # values inside config_keys that the stage sets itself, so its output does not depend on them
    unread: Optional[Callable[[Config], tuple[str, ...]]] = None

    def config_hash(self, cfg: Config) -> str:
        if not self.config_keys:
            return stable_hash({})
        return cfg.section_hash(*self.config_keys, unread=self.unread(cfg) if self.unread else ())


def _swept(cfg: Config) -> tuple[str, ...]:
    """A sweep sets every swept key and the epochs in each trial: `tune --write-back` writing the winners into
    train.<model> leaves the sweep up to date."""
    model = f"train.{cfg.tune.model}"
    return (*(f"{model}.{key}" for key in cfg.tune.space), f"{model}.optim.epochs")


@dataclass
class StageResult:
    outputs: dict[str, Any]
    output_hash: str


@dataclass
class StageContext:
    cfg: Config
    paths: RunPaths
    manifest: Manifest
    force: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def output(self, stage: str) -> dict[str, Any]:
        return self.manifest.stage(stage).get("outputs", {})

    @property
    def storage(self) -> "Storage":
        from .storage import Storage

        return Storage.of(self.paths.run, self.cfg.run.storage, self.cfg.run.name)


SPECS: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec("generate", ("data", "debug.fail_instance_every"), (), "ray_pipeline.data.stage:run"),
        StageSpec("train", ("train",), ("generate",), "ray_pipeline.train.stage:run"),
        StageSpec("tune", ("tune", "train"), ("generate",), "ray_pipeline.tune.stage:run", unread=_swept),
        # export also stores the evaluate stage's learned-heuristic setting in the model it evaluates
        StageSpec("export", ("export", *LEARNED_SETTING_KEYS), ("generate", "train"), "ray_pipeline.export.stage:run"),
        StageSpec("evaluate", ("evaluate",), ("generate", "train", "export"), "ray_pipeline.evaluate.stage:run"),
        StageSpec("report", (), ("generate", "train", "tune", "export", "evaluate"), "ray_pipeline.reports.stage:run"),
    ]
}
assert tuple(SPECS) == STAGES


class StageFailed(RuntimeError):
    pass


def _resolve(spec: StageSpec) -> Callable[[StageContext], StageResult]:
    if callable(spec.impl):
        return spec.impl
    module, _, fn = spec.impl.partition(":")
    return getattr(importlib.import_module(module), fn)


def with_upstream(targets: list[str]) -> list[str]:
    """The target stages plus every stage they read, in pipeline order (report reads what exists)."""
    need: set[str] = set()

    def add(name: str) -> None:
        if name in need:
            return
        need.add(name)
        if name != "report":
            for dep in SPECS[name].inputs:
                add(dep)

    for t in targets:
        add(t)
    return [s for s in STAGES if s in need]


def input_hash(manifest: Manifest, spec: StageSpec) -> str:
    hashes = {}
    for dep in spec.inputs:
        s = manifest.stage(dep)
        if s.get("status") == "done":
            hashes[dep] = s["output_hash"]
        elif spec.name != "report":  # report summarises whatever exists; the others need their inputs
            raise StageFailed(f"stage {spec.name!r} needs {dep!r}, which has not finished")
    return stable_hash(hashes)


def _outputs_intact(spec: StageSpec, ctx: StageContext) -> bool:
    """A finished stage is trusted only while its files still hash to what the manifest recorded."""
    if callable(spec.impl):
        return True
    mod = importlib.import_module(spec.impl.partition(":")[0])
    check = getattr(mod, "output_hash", None)
    if check is None:
        return True
    try:
        return check(ctx.paths) == ctx.manifest.stage(spec.name).get("output_hash")
    except (OSError, ValueError, KeyError):
        return False


def run_stages(ctx: StageContext, stages: list[str], specs: Optional[dict[str, StageSpec]] = None) -> dict[str, str]:
    """Run (or skip) each stage in order; returns stage -> 'ran' | 'skipped'."""
    specs = specs or SPECS
    outcome: dict[str, str] = {}
    for name in stages:
        spec = specs[name]
        fn = _resolve(spec)
        chash = spec.config_hash(ctx.cfg)
        ihash = input_hash(ctx.manifest, spec)
        if not ctx.force and ctx.manifest.is_current(name, chash, ihash):
            if _outputs_intact(spec, ctx):
                stage_event("skipped", name, "stage %s: up to date (config %s, inputs %s), skipped", name, chash, ihash)
                outcome[name] = "skipped"
                continue
            log.warning("stage %s: its outputs changed or disappeared on disk since it finished; recomputing", name)
        stage_event("start", name, "stage %s: running (config %s, inputs %s)", name, chash, ihash)
        ctx.manifest.mark_running(name, chash, ihash)
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
        except BaseException as e:
            ctx.manifest.mark_failed(name, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
            stage_event("failed", name, "stage %s: failed after %.1f s", name, time.perf_counter() - t0,
                        seconds=time.perf_counter() - t0, level=logging.ERROR)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            log.info("stage %s failed", name, exc_info=True)  # the traceback goes to the log file
            raise StageFailed(f"stage {name!r} failed: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - t0
        ctx.manifest.mark_done(name, result.output_hash, result.outputs, seconds)
        stage_event("done", name, "stage %s: done in %.1f s", name, seconds, seconds=seconds)
        ctx.storage.archive()
        outcome[name] = "ran"
    return outcome
