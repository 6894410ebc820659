"""Graph simplifications that make a variant faster and change no output that matters.

- :func:`fold_constants`: weights stored as int8 times a scale (``Cast`` + ``Mul`` on
  initializers, as in the embedded default) become plain fp32 initializers;
- :func:`fuse_gelu`: torch's erf form of GELU becomes one ``Gelu`` node;
- :func:`drop_nan_guards`: the NaN guards after attention softmaxes go, with finite masks.

Each returns a copy and is deterministic; :func:`simplify` applies all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def initializer_array(init: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where ``Cast``/``Mul`` nodes whose inputs are all constants become initializers."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    values: dict[str, np.ndarray] = {}
    kept = []
    for node in graph.node:
        foldable = node.op_type in ("Cast", "Mul") and all(
            name in inits or name in values for name in node.input
        )
        if not foldable:
            kept.append(node)
            continue
        args = [values[n] if n in values else initializer_array(inits[n]) for n in node.input]
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            values[node.output[0]] = args[0].astype(helper.tensor_dtype_to_np_dtype(to))
        else:
            values[node.output[0]] = np.multiply(args[0], args[1])
    if not values:
        return out
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    new = [i for i in graph.initializer if i.name in used]
    new += [numpy_helper.from_array(v, name) for name, v in values.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(new)
    return out


def _scalars(graph: onnx.GraphProto) -> dict[str, tuple[float, Any]]:
    """Float scalar constants (initializers and ``Constant`` nodes): name -> (value, proto)."""
    from onnx import TensorProto

    found: dict[str, tuple[float, Any]] = {}
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) == 1:
            found[init.name] = (float(initializer_array(init).reshape(())), init)
    for node in graph.node:
        if (
            node.op_type != "Constant"
            or len(node.attribute) != 1
            or node.attribute[0].name != "value"
        ):
            continue
        t = node.attribute[0].t
        if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) == 1:
            found[node.output[0]] = (float(initializer_array(t).reshape(())), t)
    return found


def fuse_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where ``x * (0.5 * (1 + erf(x / sqrt 2)))`` chains become one ``Gelu`` node.

    onnxruntime's own fusion misses this order of the factors (torch's dynamo export
    writes it so); unfused, it costs five passes over the widest activation.
    """
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    scalars = _scalars(graph)

    def const(name: str | None) -> float | None:
        return scalars[name][0] if name in scalars else None

    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    dropped: set[int] = set()
    replaced: dict[int, onnx.NodeProto] = {}
    for final in graph.node:
        if final.op_type != "Mul" or len(final.input) != 2:
            continue
        for x_name, half_name in (final.input, reversed(final.input)):
            half = producer.get(half_name)
            if half is None or half.op_type != "Mul" or readers.get(half_name) != 1:
                continue
            one_name = next((i for i in half.input if const(i) != 0.5), None)
            if one_name is None or not any(const(i) == 0.5 for i in half.input):
                continue
            one = producer.get(one_name)
            if one is None or one.op_type != "Add" or readers.get(one_name) != 1:
                continue
            erf_name = next((i for i in one.input if const(i) != 1.0), None)
            erf = producer.get(erf_name or "")
            if erf is None or erf.op_type != "Erf" or readers.get(erf.output[0]) != 1:
                continue
            div = producer.get(erf.input[0])
            if div is None or readers.get(div.output[0]) != 1 or div.input[0] != x_name:
                continue
            k = const(div.input[1])
            if k is None or not (
                (div.op_type == "Div" and abs(k - 2**0.5) < 1e-5)
                or (div.op_type == "Mul" and abs(k - 2**-0.5) < 1e-5)
            ):
                continue
            dropped.update(id(n) for n in (half, one, erf, div))
            replaced[id(final)] = helper.make_node(
                "Gelu", [x_name], list(final.output), name=final.name, domain="com.microsoft"
            )
            break
    if not replaced:
        return out
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _prune_initializers(graph)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def drop_nan_guards(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without ``Where(IsNaN(softmax), 0, softmax)`` after attention softmaxes.

    torch exports guard each attention softmax against rows whose keys are all masked
    (``-inf`` everywhere gives NaN). The mask values fed to ``Where`` become
    ``float32.min`` here, the same weights for any row with one unmasked key (every
    input embedgen sends has its special tokens) and finite weights for the others, so
    the guard can go: it costs two passes over every ``batch x heads x tokens x tokens``
    score tensor (about 15% of an int8 run). Graphs with other infinite constants are
    left alone.
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    scalars = _scalars(graph)
    masks = {n.input[2] for n in graph.node if n.op_type == "Where" and len(n.input) == 3}
    masks |= {n.input[1] for n in graph.node if n.op_type == "Where" and len(n.input) == 3}
    infinite = {k for k, (v, _) in scalars.items() if np.isinf(v)}
    if not infinite <= masks or any(scalars[k][0] > 0 for k in infinite):
        return out
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3 or node.output[0] in outputs:
            continue
        cond, value, x = (producer.get(node.input[0]), node.input[1], node.input[2])
        source = producer.get(x)
        if (
            cond is None
            or cond.op_type != "IsNaN"
            or cond.input[0] != x
            or source is None
            or source.op_type != "Softmax"
            or value not in scalars
        ):
            continue
        rename[node.output[0]] = x
        dropped.update((id(node), id(cond)))
    if not rename:
        return out
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    readers = {name for n in kept for name in n.input}
    if any(id(producer[name]) in dropped for name in readers if name in producer):
        return model  # an IsNaN result is read elsewhere: leave the graph as it was
    lowest = np.array(np.finfo(np.float32).min, dtype=np.float32)
    for name in infinite:
        proto = scalars[name][1]
        shaped = lowest.reshape(tuple(proto.dims))
        proto.CopyFrom(numpy_helper.from_array(shaped, proto.name))
    del graph.node[:]
    graph.node.extend(kept)
    _prune_initializers(graph)
    return out


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant weights, fuse erf-GELU chains, drop dead NaN guards."""
    return drop_nan_guards(fuse_gelu(fold_constants(model)))


def _prune_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
