"""Error types shared by layers that must not import each other (a leaf module: no torch, no ray_pipeline)."""
from __future__ import annotations


class ModelError(ValueError):
    """A model file, checkpoint or exported model that cannot be used; the message names the file and the reason."""
