"""The package version, in one place (``cgap_graph.__version__``, ONNX metadata)."""

__version__ = "0.1.0"
