"""The one place that starts or joins Ray, sets the security and tracking environment, and logs.

Embedded local Ray by default; `--address` / `ray.address` / `RAY_ADDRESS` joins a cluster instead.
`RAY_AUTH_MODE` is always set explicitly (Ray >= 2.59 turns token auth on for the first local `ray.init()`
on its own, which surprises clients later); the dashboard binds to 127.0.0.1 unless the config says otherwise.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional

from .config import Config

log = logging.getLogger(__name__)
_LOGGING_DONE = False
_DASHBOARD_URL: Optional[str] = None

# Environment every Ray worker of ours gets (local or remote); W&B mode is added per run.
_WORKER_ENV = {
    "RAY_DEDUP_LOGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    # Ray Train's controller polls its workers at this interval, and a worker's report() waits for the poll:
    # at the default 2 s every epoch of a small model took >= 2 s (measured: 0.6 s of work + 1.4 s waiting)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}


def configure_logging(level: str = "INFO") -> None:
    global _LOGGING_DONE
    if _LOGGING_DONE:
        return
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("ray.data", "ray.tune", "ray.train", "filelock", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _LOGGING_DONE = True


def wandb_mode(cfg: Config) -> str:
    """The W&B mode in force: `RAY_PIPELINE_WANDB_MODE` (tests set it to disabled) over `tracking.wandb_mode`."""
    return os.environ.get("RAY_PIPELINE_WANDB_MODE", cfg.tracking.wandb_mode)


def set_tracking_env(cfg: Config, wandb_dir: Optional[str] = None) -> dict[str, str]:
    """W&B is offline unless configured otherwise, and never prompts for a key."""
    env = {"WANDB_MODE": wandb_mode(cfg),
           "WANDB_SILENT": "true", "WANDB_PROJECT": cfg.tracking.wandb_project}
    if wandb_dir:
        env["WANDB_DIR"] = wandb_dir
    os.environ.update(env)
    return env


@dataclass(frozen=True)
class RayInfo:
    address: str
    embedded: bool  # no address given: a local Ray of our own (or the one already running in-process)
    started: bool  # this call started it, so this process shuts it down
    num_cpus: float
    dashboard_url: Optional[str]
    auth_mode: str


def resolve_address(cfg: Config, address: Optional[str]) -> Optional[str]:
    return address or cfg.ray.address or os.environ.get("RAY_ADDRESS") or None


def _job_env_keys() -> set[str]:
    """Environment variables the submitted Ray Job's runtime_env already sets (none outside a Ray Job)."""
    import json

    try:
        job = json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])
        return set(((job.get("runtime_env") or {}).get("env_vars") or {}))
    except (KeyError, ValueError, AttributeError):
        return set()


def _is_gcs_address(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    return bool(host) and "://" not in addr and port.isdigit()


def _dashboard_port() -> int:
    """8265 when free, else any free port (a second embedded Ray on the same machine)."""
    import socket

    for port in (8265, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free TCP port for the Ray dashboard")


def _state_api_env(host: str, port: int) -> dict[str, str]:
    """Point State API clients in every worker at *this* Ray's dashboard.

    Ray Train's PlacementGroupCleaner (a detached actor that frees a Train run's placement group when its
    controller dies, e.g. when ASHA stops a Tune trial) finds the dashboard through RAY_API_SERVER_ADDRESS,
    RAY_ADDRESS or else /tmp/ray/ray_current_cluster. An embedded Ray never writes that file, so after any
    `ray start` on the machine it names another (often dead) cluster: the cleaner's thread dies and every stopped
    trial's CPUs stay reserved until the next trial cannot start.
    """
    return {"RAY_API_SERVER_ADDRESS": f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"}


def init_ray(cfg: Config, address: Optional[str] = None, extra_env: Optional[dict[str, str]] = None) -> RayInfo:
    """Start embedded Ray or join a cluster; reuse an already initialised Ray (tests, Ray Jobs)."""
    auth = os.environ.get("RAY_AUTH_MODE")
    if auth is None:
        os.environ["RAY_AUTH_MODE"] = auth = cfg.ray.auth_mode
    elif auth != cfg.ray.auth_mode:
        log.info("RAY_AUTH_MODE=%s from the environment overrides ray.auth_mode=%s", auth, cfg.ray.auth_mode)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.ray.progress_bars is False or (cfg.ray.progress_bars is None and not sys.stderr.isatty()):
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(int(cfg.train.worker_start_timeout_s)))

    import ray

    env = dict(_WORKER_ENV, **(extra_env or {}))
    addr = resolve_address(cfg, address)
    started = not ray.is_initialized()
    global _DASHBOARD_URL
    if started:
        if addr:
            log.info("joining Ray cluster at %s (auth %s)", addr, auth)
            if _is_gcs_address(addr):
                env.setdefault("RAY_ADDRESS", addr)  # see _state_api_env
            for key in _job_env_keys():  # a Ray Job's own env_vars win; Ray refuses to merge a key set twice
                env.pop(key, None)
            _DASHBOARD_URL = ray.init(address=addr, runtime_env={"env_vars": env}, log_to_driver=True).dashboard_url
        else:
            # address="local": always a new embedded Ray, never a stale `ray start` cluster that
            # /tmp/ray/ray_current_cluster still points to
            kwargs = dict(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=cfg.ray.include_dashboard,
                          dashboard_host=cfg.ray.dashboard_host, runtime_env={"env_vars": env})
            if cfg.ray.include_dashboard:
                kwargs["dashboard_port"] = port = _dashboard_port()
                # workers only: in this process the variable would also redirect JobSubmissionClient & co.
                env.update(_state_api_env(cfg.ray.dashboard_host, port))
            if cfg.ray.object_store_memory_mb:
                kwargs["object_store_memory"] = cfg.ray.object_store_memory_mb * 2**20
            _DASHBOARD_URL = ray.init(**kwargs).dashboard_url
    configure_ray_data(cfg)
    ctx = ray.get_runtime_context()
    info = RayInfo(address=ctx.gcs_address, embedded=not addr, started=started, num_cpus=ray.cluster_resources().get("CPU", 0.0),
                   dashboard_url=_DASHBOARD_URL or None, auth_mode=auth)
    log.info("Ray %s: %s CPUs at %s, dashboard %s", "embedded" if info.embedded else "cluster", info.num_cpus,
             info.address, info.dashboard_url or "off")
    return info


def configure_ray_data(cfg: Config) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Artifacts must be byte-reproducible: keep block order.
    ctx.execution_options.preserve_order = True
    if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1":
        ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
