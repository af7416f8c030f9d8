"""ray_pipeline: learn search heuristics for a constraint solver on Ray and ship them as small ONNX models."""

__version__ = "0.1.0"
