"""A small jaxpr -> ONNX converter for inference functions (`vreid-export --format onnx`).

TensorFlow's ONNX converter cannot read what jax2tf emits today (one `XlaCallModule` op holding
StableHLO), so the function is converted from its jaxpr instead: the function is traced with its
symbolic dimensions (batch B, length L), every equation becomes one or a few ONNX nodes, closed-over
arrays become initializers, and each symbolic size in a shape (`B * L` in a reshape, say) is computed
in the graph from the inputs' runtime shapes. The result keeps B and L symbolic.

Only the primitives these models use in inference are covered (`HANDLERS`); any other primitive
is a UserError naming it. Every handler is tested against jax (`tests/test_export.py`).
"""

from __future__ import annotations

import jax
import jax.extend.core as jax_core
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vreid_jax import errors

OPSET = 18  # Reduce* take their axes as an input from 18 on.

_DTYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.int16): TensorProto.INT16,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.uint32): TensorProto.UINT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def onnx_dtype(dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise errors.UserError(f"ONNX export: dtype {dtype} is not supported.")
    return _DTYPES[dtype]


class _Graph:
    """The nodes and initializers under construction, with unique names."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0
        self.dims = {}  # dimension variable name -> its _Dim, read from the inputs' shapes

    def name(self, hint: str = "t") -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, dtype=None) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def shape(self, dims) -> str:
        """An int64 1-D tensor of `dims`: ints, and symbolic sizes evaluated in the graph."""
        parts = [_Dim.of(self, d) for d in dims]
        if all(isinstance(p, int) for p in parts):
            return self.const(np.asarray(parts, np.int64).reshape(len(parts)))
        pieces = [p.name if isinstance(p, _Dim) else self.const([p], np.int64) for p in parts]
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)


class _Dim:
    """A symbolic size in the graph: an int64 tensor `[1]`. jax evaluates a symbolic dimension
    expression over these with + and * (and // and %), as it would over ints."""

    __array_ufunc__ = None  # numpy integers defer to our reflected operators

    def __init__(self, graph: _Graph, name: str):
        self.graph, self.name = graph, name

    @staticmethod
    def of(graph: _Graph, dim):
        """An int, or the `_Dim` of a symbolic dimension expression over the inputs' dimension
        variables (`graph.dims`)."""
        if isinstance(dim, _Dim | int | np.integer):
            return dim if isinstance(dim, _Dim) else int(dim)
        value = dim._evaluate(graph.dims)  # jax's own evaluation of the expression
        return value if isinstance(value, _Dim) else int(value)

    def _binary(self, op_type: str, other, reflected=False):
        other_name = (
            other.name if isinstance(other, _Dim) else self.graph.const([int(other)], np.int64)
        )
        a, b = (other_name, self.name) if reflected else (self.name, other_name)
        return _Dim(self.graph, self.graph.op(op_type, a, b))

    def __add__(self, other):
        return self._binary("Add", other)

    def __radd__(self, other):
        return self._binary("Add", other, True)

    def __mul__(self, other):
        return self._binary("Mul", other)

    def __rmul__(self, other):
        return self._binary("Mul", other, True)

    def __sub__(self, other):
        return self._binary("Sub", other)

    def __rsub__(self, other):
        return self._binary("Sub", other, True)

    def __floordiv__(self, other):  # sizes are non-negative: integer Div is floor division
        return self._binary("Div", other)

    def __mod__(self, other):
        return self._binary("Mod", other)


# ----------------------------------------------------------------------------- handlers
# Each handler: (graph, eqn, input names, input avals) -> list of output names.

_BINARY = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
    "lt": "Less",
    "le": "LessOrEqual",
    "eq": "Equal",
    "and": "And",
    "or": "Or",
}
_UNARY = {
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "abs": "Abs",
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "erf": "Erf",
    "sign": "Sign",
    "floor": "Floor",
    "ceil": "Ceil",
    "not": "Not",
    "stop_gradient": "Identity",
    "copy": "Identity",
    "copy_p": "Identity",
    "optimization_barrier": "Identity",
}


def _binary(op_type):
    def handle(g, eqn, ins, avals):
        if op_type in ("Div",) and not np.issubdtype(avals[0].dtype, np.floating):
            raise errors.UserError("ONNX export: integer division is not supported.")
        return [g.op(op_type, *ins)]

    return handle


def _unary(op_type):
    return lambda g, eqn, ins, avals: [g.op(op_type, ins[0])]


def _ne(g, eqn, ins, avals):
    return [g.op("Not", g.op("Equal", *ins))]


def _rsqrt(g, eqn, ins, avals):
    return [g.op("Reciprocal", g.op("Sqrt", ins[0]))]


def _square(g, eqn, ins, avals):
    return [g.op("Mul", ins[0], ins[0])]


def _integer_pow(g, eqn, ins, avals):
    y = eqn.params["y"]
    if y == 0:
        return [
            g.op(
                "Add",
                g.op("Mul", ins[0], g.const(np.zeros((), avals[0].dtype))),
                g.const(np.ones((), avals[0].dtype)),
            )
        ]
    out = ins[0]
    for _ in range(abs(y) - 1):
        out = g.op("Mul", out, ins[0])
    return [g.op("Reciprocal", out) if y < 0 else out]


def _convert(g, eqn, ins, avals):
    return [g.op("Cast", ins[0], to=onnx_dtype(eqn.params["new_dtype"]))]


def _reshape(g, eqn, ins, avals):
    if eqn.params.get("dimensions") is not None:
        raise errors.UserError("ONNX export: reshape with `dimensions` is not supported.")
    return [g.op("Reshape", ins[0], g.shape(eqn.params["new_sizes"]))]


def _broadcast_in_dim(g, eqn, ins, avals):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    expanded = [1] * len(shape)
    for axis, d in zip(dims, avals[0].shape, strict=True):
        expanded[axis] = d
    x = ins[0]
    if tuple(expanded) != tuple(avals[0].shape):
        x = g.op("Reshape", x, g.shape(expanded))
    return [g.op("Expand", x, g.shape(shape))]


def _transpose(g, eqn, ins, avals):
    return [g.op("Transpose", ins[0], perm=list(eqn.params["permutation"]))]


def _squeeze(g, eqn, ins, avals):
    return [g.op("Squeeze", ins[0], g.const(list(eqn.params["dimensions"]), np.int64))]


def _concatenate(g, eqn, ins, avals):
    return [g.op("Concat", *ins, axis=int(eqn.params["dimension"]))]


def _pad(g, eqn, ins, avals):
    config = eqn.params["padding_config"]
    if any(interior != 0 for _, _, interior in config):
        raise errors.UserError("ONNX export: pad with interior padding is not supported.")
    if any(isinstance(x, int) and x < 0 for lo, hi, _ in config for x in (lo, hi)):
        raise errors.UserError("ONNX export: pad with negative padding is not supported.")
    pads = g.shape([lo for lo, _, _ in config] + [hi for _, hi, _ in config])
    return [g.op("Pad", ins[0], pads, ins[1], mode="constant")]


def _slice(g, eqn, ins, avals):
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    axes = g.const(np.arange(len(starts), dtype=np.int64))
    steps = g.const(np.asarray(strides, np.int64))
    return [g.op("Slice", ins[0], g.shape(starts), g.shape(limits), axes, steps)]


def _split(g, eqn, ins, avals):
    """One Slice per piece (the fused q/k/v projection of a CLIP ViT splits in three)."""
    axes = g.const([eqn.params["axis"]], np.int64)
    outs, start = [], 0
    for size in eqn.params["sizes"]:
        outs.append(g.op("Slice", ins[0], g.shape([start]), g.shape([start + size]), axes))
        start = start + size
    return outs


def _select_n(g, eqn, ins, avals):
    if len(ins) != 3:
        raise errors.UserError("ONNX export: select_n with more than two cases is not supported.")
    pred = ins[0]
    if avals[0].dtype != np.bool_:
        pred = g.op("Cast", pred, to=TensorProto.BOOL)
    return [g.op("Where", pred, ins[2], ins[1])]


def _reduce(op_type):
    def handle(g, eqn, ins, avals):
        axes = g.const(np.asarray(eqn.params["axes"], np.int64))
        return [g.op(op_type, ins[0], axes, keepdims=0)]

    return handle


def _dot_general(g, eqn, ins, avals):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(len(avals[0].shape))]
    rhs = [None] * len(avals[1].shape)
    for i, j in zip(lb, rb, strict=True):
        rhs[j] = lhs[i]
    for i, j in zip(lc, rc, strict=True):
        rhs[j] = lhs[i]
    rhs = [r if r is not None else next(letters) for r in rhs]
    out = (
        [lhs[i] for i in lb]
        + [c for i, c in enumerate(lhs) if i not in lb and i not in lc]
        + [c for j, c in enumerate(rhs) if j not in rb and j not in rc]
    )
    equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
    result = g.op("Einsum", ins[0], ins[1], equation=equation)
    out_dtype = eqn.outvars[0].aval.dtype
    if out_dtype != avals[0].dtype:
        result = g.op("Cast", result, to=onnx_dtype(out_dtype))
    return [result]


def _conv(g, eqn, ins, avals):
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise errors.UserError(
            "ONNX export: conv_general_dilated with input dilation or batch groups is not supported."
        )
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    x = g.op("Transpose", ins[0], perm=list(lhs_spec))
    w = g.op("Transpose", ins[1], perm=list(rhs_spec))
    padding = [(int(lo), int(hi)) for lo, hi in p["padding"]]
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise errors.UserError("ONNX export: convolution with negative padding is not supported.")
    y = g.op(
        "Conv",
        x,
        w,
        strides=[int(s) for s in p["window_strides"]],
        dilations=[int(d) for d in p["rhs_dilation"]],
        pads=[lo for lo, _ in padding] + [hi for _, hi in padding],
        group=int(p["feature_group_count"]),
    )
    inverse = [out_spec.index(axis) for axis in range(len(out_spec))]
    y = g.op("Transpose", y, perm=inverse)
    out_dtype = eqn.outvars[0].aval.dtype
    if out_dtype != avals[0].dtype:
        y = g.op("Cast", y, to=onnx_dtype(out_dtype))
    return [y]


def _clamp(g, eqn, ins, avals):
    low, x, high = ins
    return [g.op("Max", g.op("Min", x, high), low)]


HANDLERS = {
    **{name: _binary(op) for name, op in _BINARY.items()},
    **{name: _unary(op) for name, op in _UNARY.items()},
    "ne": _ne,
    "rsqrt": _rsqrt,
    "square": _square,
    "integer_pow": _integer_pow,
    "convert_element_type": _convert,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "transpose": _transpose,
    "squeeze": _squeeze,
    "concatenate": _concatenate,
    "pad": _pad,
    "slice": _slice,
    "split": _split,
    "select_n": _select_n,
    "reduce_sum": _reduce("ReduceSum"),
    "reduce_max": _reduce("ReduceMax"),
    "reduce_min": _reduce("ReduceMin"),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "clamp": _clamp,
}
# Primitives that call a sub-jaxpr: inlined.
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat")


# ----------------------------------------------------------------------------- conversion


def convert(fn, specs, input_names, output_name: str) -> onnx.ModelProto:
    """The ONNX model of `fn(*inputs) -> array` for the inputs `specs` (ShapeDtypeStructs whose
    symbolic dimensions stay symbolic, `jax.export.symbolic_args_specs`).

    Raises:
      UserError: `fn` uses a primitive outside `HANDLERS`.
    """
    closed = jax.make_jaxpr(fn)(*specs)
    g = _Graph()
    graph_inputs = []
    for name, spec in zip(input_names, specs, strict=True):
        dims = [d if isinstance(d, int) else str(d) for d in spec.shape]
        graph_inputs.append(helper.make_tensor_value_info(name, onnx_dtype(spec.dtype), dims))
        for axis, d in enumerate(spec.shape):
            if not isinstance(d, int) and str(d).isidentifier() and str(d) not in g.dims:
                g.dims[str(d)] = _Dim(g, g.op("Shape", name, start=axis, end=axis + 1))
    env = {}
    for var, value in zip(closed.jaxpr.constvars, closed.consts, strict=True):
        env[var] = g.const(np.asarray(value))
    out = _convert_jaxpr(g, closed.jaxpr, list(input_names), env)
    (result,) = out
    g.nodes.append(helper.make_node("Identity", [result], [output_name]))
    out_aval = closed.out_avals[0]
    out_dims = [d if isinstance(d, int) else str(d) for d in out_aval.shape]
    graph = helper.make_graph(
        g.nodes,
        "features",
        graph_inputs,
        [helper.make_tensor_value_info(output_name, onnx_dtype(out_aval.dtype), out_dims)],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vreid_jax"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _convert_jaxpr(g: _Graph, jaxpr, inputs: list[str], env: dict) -> list[str]:
    """Adds `jaxpr`'s equations to `g`, its invars bound to `inputs`; returns its outputs."""
    env = dict(env)
    for var, name in zip(jaxpr.invars, inputs, strict=True):
        env[var] = name

    def read(atom):
        if isinstance(atom, jax_core.Literal):
            return g.const(np.asarray(atom.val, dtype=atom.aval.dtype))
        return env[atom]

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        ins = [read(v) for v in eqn.invars]
        if name in _CALLS:
            sub = next(
                eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params
            )
            consts = getattr(sub, "consts", [])
            sub_jaxpr = getattr(sub, "jaxpr", sub)
            const_env = {
                v: g.const(np.asarray(c)) for v, c in zip(sub_jaxpr.constvars, consts, strict=True)
            }
            outs = _convert_jaxpr(g, sub_jaxpr, ins, const_env)
        elif name in HANDLERS:
            outs = HANDLERS[name](g, eqn, ins, [v.aval for v in eqn.invars])
        else:
            raise errors.UserError(
                f"ONNX export: the primitive {name!r} is not supported by vreid_jax.deploy.onnx_writer "
                f"(supported: {', '.join(sorted(HANDLERS))})."
            )
        for var, out in zip(eqn.outvars, outs, strict=True):
            env[var] = out
    return [read(v) for v in jaxpr.outvars]


def export_onnx(ff, path: str) -> dict:
    """Writes the ONNX model of an `export.FeatureFunction` to `path`, weights as initializers;
    returns what `export.json` records of it."""
    model = convert(ff.closed(), ff.specs(), [p.name for p in ff.inputs], ff.output.name)
    onnx.save_model(model, path)
    args = ", ".join(f"'{p.name}': {p.name}" for p in ff.inputs)
    return {
        "opset": OPSET,
        "weights": "initializers of the graph",
        "load": (
            "session = onnxruntime.InferenceSession('model.onnx'); "
            f"(features,) = session.run(None, {{{args}}})"
        ),
    }
