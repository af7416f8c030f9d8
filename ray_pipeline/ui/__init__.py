"""The local web app over a run root (`ray-pipeline ui`): Control Center and Model Explorer (see app.py).

The command's arguments live here so that building the CLI parser does not import the web library."""
from __future__ import annotations

from typing import Any


def add_arguments(p: Any) -> None:
    p.add_argument("--root", default="runs", help="run root (holds registry.sqlite and the run directories)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (anything but loopback needs a token)")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--token", default=None, help="access token (default for a non-loopback host: a random one, "
                                                 "printed); also RAY_PIPELINE_UI_TOKEN")
    p.add_argument("--max-upload-kb", type=int, default=2048, help="largest instance file accepted")
    p.add_argument("--node-limit", type=int, default=20_000, help="default node limit of a solve")
    p.add_argument("--time-limit", type=float, default=10.0, help="default time limit of a solve, seconds")
    p.add_argument("--workers", type=int, default=2, help="solver processes (two solves run at once)")
