"""The `generate` stage: specs -> Ray Data (generate, trace, label, drop uninformative) -> assemble -> Parquet."""
from __future__ import annotations

import logging
import time

from .. import atomic
from ..console import progress
from ..pipeline import StageContext, StageResult
from . import dataset, ray_data, report, steps

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    specs = steps.instance_specs(cfg.data, cfg.run.seed)
    log.info("generate: %d instances in %d blocks", len(specs),
             ray_data.num_blocks(len(specs), cfg.data.instances_per_block))
    t0 = time.perf_counter()
    rows = []
    for row in ray_data.build(specs, cfg.data, cfg.debug):
        rows.append(row)
        if len(rows) % cfg.data.instances_per_block == 0 or len(rows) == len(specs):  # once per block
            progress("generate", len(rows), len(specs), "instances")
    wall = time.perf_counter() - t0
    rows.sort(key=lambda r: r["ordinal"])  # spec order: the dataset files do not depend on which block ran first
    assembled = dataset.assemble(rows, cfg)
    with atomic.directory(ctx.paths.dataset) as tmp:
        dataset.write(assembled, tmp)
        summary = report.write(assembled, tmp / "report", wall)
    log.info("generate: %s states per split, %d errors, %.1f s", summary["states_per_split"],
             summary["instances"]["errors"], wall)
    return StageResult(
        outputs={"path": str(ctx.paths.dataset), "states": summary["states_per_split"],
                 "instances": summary["instances"], "expansion_factor": summary["expansion_factor"],
                 "report": str(ctx.paths.dataset / "report" / "report.md")},
        output_hash=output_hash(ctx.paths))


def output_hash(paths) -> str:
    return dataset.content_hash(paths.dataset)
