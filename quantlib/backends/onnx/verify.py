"""Running an exported integer ONNX in onnxruntime (graph optimisations off) and comparing it, layer by layer, with
the integer GraphModule it was exported from."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import torch
import torch.fx as fx

from quantlib.backends.onnx.integer_export import IntegerOnnx
from quantlib.verification import LayerComparison, compare, compare_in_chunks, integer_layers, record


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray | tuple[np.ndarray, ...],
                    extra_outputs: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """All graph outputs (plus ``extra_outputs``: tensor name -> element type) for input ``x`` (one array per graph
    input), with graph optimisations off."""
    model = copy.deepcopy(model)
    for name, elem_type in (extra_outputs or {}).items():
        model.graph.output.append(oh.make_tensor_value_info(name, elem_type, None))
    session = onnx_session(model)
    names = [o.name for o in session.get_outputs()]
    xs = x if isinstance(x, tuple) else (x,)
    feeds = {i.name: a for i, a in zip(session.get_inputs(), xs, strict=True)}
    return dict(zip(names, session.run(names, feeds), strict=True))


def onnx_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` with graph optimisations off (they could change the arithmetic)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def verify_onnxruntime(integer: fx.GraphModule, exported: IntegerOnnx, x: torch.Tensor) -> list[LayerComparison]:
    """Per layer and per output: elements where onnxruntime's value differs from the integer GraphModule's."""
    layers = [name for name in integer_layers(integer) if name in exported.node_tensors]
    types = infer_types(exported.model)
    wanted = {exported.node_tensors[name]: types[exported.node_tensors[name]] for name in layers}

    def compare_batch(part: torch.Tensor) -> list[LayerComparison]:
        expected = record(integer, part, layers)
        got = run_onnxruntime(exported.model, part.numpy().astype(np.float32), wanted)
        comparisons = [compare(name, expected[name], stored_values(exported, exported.node_tensors[name], got))
                       for name in layers]
        with torch.no_grad():
            outputs = integer(part)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        for i, out in enumerate(outputs):
            comparisons.append(compare(f"output_{i}", out, torch.from_numpy(got[f"output_{i}"])))
        return comparisons

    return compare_in_chunks(compare_batch, x)


def stored_values(exported: IntegerOnnx, tensor: str, got: dict[str, np.ndarray]) -> torch.Tensor:
    """The integers onnxruntime's ``tensor`` holds (less its zero point, if it is stored with one)."""
    return torch.from_numpy(got[tensor]).double() - exported.zero_points.get(tensor, 0)


def infer_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({o.name: o.type.tensor_type.elem_type for o in inferred.graph.output})
    return types
