"""Checks that turn impossible requests into clear errors before any work starts (never a silent hang)."""
from __future__ import annotations

from .config import Config
from .kinds import KINDS
from .runtime import RayInfo


class PreflightError(RuntimeError):
    pass


def _train_cpus(cfg: Config) -> float:
    return max(cfg.train.num_workers, 1) * cfg.train.cpus_per_worker


def _tune_cpus(cfg: Config) -> float:
    return cfg.tune.trial_cpus + cfg.tune.num_workers * cfg.train.cpus_per_worker


def check_before_ray(cfg: Config, stages: list[str]) -> None:
    problems = []
    if "tune" in stages and not cfg.ray.include_dashboard and not cfg.ray.address:
        problems.append("ray.include_dashboard: must be true for tune (Train-in-Tune needs the State API; "
                        "without it the second trial's workers never start)")
    needs_all = [s for s in stages if s in ("export", "evaluate", "report")]
    if needs_all and not set(KINDS) <= set(cfg.train.models):
        problems.append(f"train.models: {', '.join(needs_all)} need every model ({', '.join(KINDS)}); "
                        f"this run trains only {cfg.train.models}")
    if cfg.train.mixed_precision and not cfg.train.use_gpu:
        problems.append("train.mixed_precision: needs train.use_gpu=true (autocast on CPU is not supported here)")
    n = cfg.ray.num_cpus
    if n is not None and not cfg.ray.address:
        if "train" in stages and _train_cpus(cfg) > n:
            problems.append(f"train.num_workers x train.cpus_per_worker = {_train_cpus(cfg):g} CPUs > "
                            f"ray.num_cpus = {n}")
        if "tune" in stages and _tune_cpus(cfg) > n:
            problems.append(f"tune.trial_cpus + tune.num_workers x train.cpus_per_worker = {_tune_cpus(cfg):g} "
                            f"CPUs > ray.num_cpus = {n}")
    if cfg.run.storage and any(s in stages for s in ("train", "tune")):
        problems.extend(_storage_problems(cfg.run.storage))
    if problems:
        raise PreflightError("impossible request:\n" + "\n".join(f"  - {p}" for p in problems))


def _storage_problems(uri: str) -> list[str]:
    """Write, read back and delete a probe object: a wrong bucket, endpoint or credentials fail here, in
    seconds, instead of inside the first Train checkpoint upload."""
    import uuid

    from .storage import StorageError, resolve

    try:
        fs, base = resolve(uri)
        probe = f"{base.rstrip('/')}/.ray-pipeline-probe-{uuid.uuid4().hex[:8]}"
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        with fs.open_input_stream(probe) as f:
            ok = f.read() == b"ok"
        fs.delete_file(probe)
    except StorageError as e:
        return [str(e)]
    except Exception as e:  # OSError from S3/GCS clients: no such bucket, access denied, connection refused
        return [f"run.storage: cannot write to {uri.split('?')[0]!r} ({type(e).__name__}: {str(e)[:200]})"]
    return [] if ok else [f"run.storage: {uri.split('?')[0]!r} returned different bytes than were written"]


def check_cluster(cfg: Config, stages: list[str], info: RayInfo) -> None:
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    problems = []
    if "train" in stages and _train_cpus(cfg) > cpus:
        problems.append(f"train.num_workers x train.cpus_per_worker = {_train_cpus(cfg):g} CPUs, but the cluster "
                        f"has {cpus:g} CPUs in all")
    if "tune" in stages and _tune_cpus(cfg) > cpus:
        problems.append(f"tune.trial_cpus + tune.num_workers x train.cpus_per_worker = {_tune_cpus(cfg):g} CPUs, "
                        f"but the cluster has {cpus:g}")
    if cfg.train.use_gpu and ("train" in stages or "tune" in stages) and max(cfg.train.num_workers, 1) > gpus:
        problems.append(f"train.use_gpu: {max(cfg.train.num_workers, 1)} GPU workers requested, the cluster has "
                        f"{gpus:g} GPUs")
    if problems:
        raise PreflightError("impossible request for this cluster:\n" + "\n".join(f"  - {p}" for p in problems))
