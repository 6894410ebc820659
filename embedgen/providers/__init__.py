"""Providers: who turns chunk texts into vectors (local ONNX models, hosted APIs)."""
