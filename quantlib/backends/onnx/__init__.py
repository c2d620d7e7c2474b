"""Standard integer ONNX export and onnxruntime verification."""

from quantlib.backends.onnx.integer_export import IntegerOnnx, export_integer_onnx, integer_onnx
from quantlib.backends.onnx.verify import run_onnxruntime, verify_onnxruntime

__all__ = ["IntegerOnnx", "export_integer_onnx", "integer_onnx", "run_onnxruntime", "verify_onnxruntime"]
