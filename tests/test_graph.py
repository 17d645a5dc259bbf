"""cnnfilter.nn.graph against ONNX's own backend test cases: every node case whose operators cnnfilter supports,
and the pytorch-converted / pytorch-operator models shipped in the onnx wheel (inputs other than the first
turned into initializers, as in an exported model)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from cnnfilter.nn.graph import OPS, Graph, GraphError, Node  # noqa: E402
from cnnfilter.nn.onnxfile import graph_from_proto  # noqa: E402

# what cnnfilter refuses on purpose (one clear error): 1-D and 3-D convolutions and pooling (image networks are
# 2-D), MaxPool's argmax indices, training mode
REFUSED = ("pool_1d", "pool_3d", "training", "argmax", "Conv1d", "Conv3d", "MaxPool1d", "AvgPool3d", "MaxPool3d",
           "causal_conv",
           "operator_maxpool", "FLOAT8", "BFLOAT16", "INT4", "FLOAT4", "INT2")  # the last: types numpy lacks


def _node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with np.errstate(all="ignore"):
        cases = collect_testcases()
    out = []
    for c in cases:
        if not c.data_sets or not {n.op_type for n in c.model.graph.node} <= set(OPS):
            continue
        inputs, outputs = _arrays(c.data_sets[0])
        if not inputs or not isinstance(inputs[0], np.ndarray) or inputs[0].dtype != np.float32:
            continue
        out.append(pytest.param(c, id=c.name))
    return out


def _arrays(data_set):
    """A case's inputs and outputs as arrays (some are stored as TensorProtos)."""
    def conv(v):
        if isinstance(v, onnx.TensorProto):
            try:
                return numpy_helper.to_array(v)
            except Exception:  # noqa: BLE001 - a type numpy has no array for
                return None
        return v

    return [conv(v) for v in data_set[0]], [conv(v) for v in data_set[1]]


def _data_dirs():
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    dirs = sorted(glob.glob(os.path.join(root, "pytorch-converted", "*")) +
                  glob.glob(os.path.join(root, "pytorch-operator", "*")))
    out = []
    for d in dirs:
        m = onnx.load(os.path.join(d, "model.onnx"))
        weights = {t.name for t in m.graph.initializer}
        data = [v for v in m.graph.input if v.name not in weights]
        if ({n.op_type for n in m.graph.node} <= set(OPS) and len(data) == 1
                and data[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT):
            out.append(pytest.param(d, id=os.path.basename(d)))
    return out


def _check(model, inputs, outputs, name, rtol, atol):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi, arr in zip(list(m.graph.input)[1:], inputs[1:]):
        if arr is not None:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    x = inputs[0]
    if any(s in name for s in REFUSED):
        with pytest.raises(GraphError):
            graph_from_proto(m, x.shape[1:], batch=x.shape[0]).activations(x)
        return
    net = graph_from_proto(m, x.shape[1:], batch=x.shape[0])
    acts = net.activations(x)
    for vo, ref in zip(m.graph.output, outputs):
        got = acts[vo.name]
        assert got.shape == ref.shape
        assert got.dtype == ref.dtype or (ref.dtype == np.float64 and got.dtype == np.float32)
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    if len(m.graph.output) == 1:
        np.testing.assert_array_equal(net.forward(x), acts[m.graph.output[0].name])


@pytest.mark.parametrize("case", _node_cases())
def test_onnx_node_cases(case):
    inputs, outputs = _arrays(case.data_sets[0])
    _check(case.model, inputs, outputs, case.name, max(case.rtol, 1e-4), max(case.atol, 1e-6))


@pytest.mark.parametrize("folder", _data_dirs())
def test_onnx_pytorch_models(folder):
    def read(f):
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        return numpy_helper.to_array(t)

    model = onnx.load(os.path.join(folder, "model.onnx"))
    xs = [read(f) for f in sorted(glob.glob(os.path.join(folder, "test_data_set_0", "input_*.pb")))]
    ys = [read(f) for f in sorted(glob.glob(os.path.join(folder, "test_data_set_0", "output_*.pb")))]
    assert len(xs) == 1 and xs[0].dtype == np.float32
    _check(model, xs, ys, os.path.basename(folder), 1e-3, 1e-5)


def test_the_suites_cover_every_operator():
    """The cases above exercise every supported operator (a test that cannot fail is a defect: an operator
    without a case would be tested by nothing here)."""
    seen = {n.op_type for p in _node_cases() for n in p.values[0].model.graph.node}
    seen |= {n.op_type for p in _data_dirs() for n in onnx.load(os.path.join(p.values[0], "model.onnx")).graph.node}
    assert set(OPS) - seen <= {"Constant", "ConstantOfShape"}, set(OPS) - seen  # both: test_shape_arithmetic


def _n(op, inputs, outputs, **attrs):
    return Node(f"{op}_{outputs[0]}", op, tuple(inputs), tuple(outputs), attrs)


def test_residual_output_read_twice_is_never_overwritten():
    """y = relu(x) + relu(x) * 2: the shared tensor keeps its value for both readers; forward drops tensors
    after their last reader and returns what activations returns."""
    nodes = [_n("Relu", ["x"], ["r"]), _n("Mul", ["r", "two"], ["m"]), _n("Add", ["r", "m"], ["y"])]
    g = Graph(nodes, {"two": np.float32(2.0).reshape(())}, "x", (2, 3), "y", 17)
    x = np.arange(-6, 6, dtype=np.float32).reshape(2, 2, 3)
    np.testing.assert_array_equal(g.forward(x), np.maximum(x, 0) * 3)
    assert list(g.activations(x)) == ["r", "m", "y"]


def test_nodes_run_in_topological_order_whatever_the_file_order():
    nodes = [_n("Add", ["r", "m"], ["y"]), _n("Mul", ["r", "r"], ["m"]), _n("Relu", ["x"], ["r"])]
    g = Graph(nodes, {}, "x", (3,), "y", 17)
    assert [n.op for n in g.nodes] == ["Relu", "Mul", "Add"]
    x = np.array([[-1, 2, 3]], np.float32)
    np.testing.assert_array_equal(g.forward(x), [[0, 6, 12]])


@pytest.mark.parametrize(("nodes", "message"), [
    ([_n("Relu", ["y"], ["r"]), _n("Relu", ["r"], ["y"])], "not acyclic"),
    ([_n("Relu", ["x"], ["y"]), _n("Relu", ["x"], ["y"])], "made twice"),
    ([_n("Relu", ["ghost"], ["y"])], "no node makes"),
    ([_n("Upsample", ["x"], ["y"])], "Upsample.* is not supported; supported: Abs, Add, AveragePool"),
])
def test_graphs_that_cannot_run_are_refused(nodes, message):
    with pytest.raises(GraphError, match=message):
        Graph(nodes, {}, "x", (3,), "y", 17)


def test_a_pooling_padded_beyond_memory_is_refused_before_its_copy():
    """A MaxPool whose padding would make the numpy engine's padded copy larger than the memory limit is refused
    (the copy counted), before anything is allocated; a window with no pixel is one GraphError."""
    from cnnfilter.limits import LimitError

    nodes = [_n("MaxPool", ["x"], ["y"], kernel_shape=[10001, 10001], strides=[10000, 10000],
                pads=[10000, 10000, 10000, 10000])]
    with pytest.raises(LimitError, match="over the memory limit"):
        Graph(nodes, {}, "x", (8, 1, 1), "y", 17)
    nodes = [_n("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[3, 0, 3, 0])]
    with pytest.raises(GraphError, match=r"window 2x2 with pads \[3, 0, 3, 0\] does not fit the input"):
        Graph(nodes, {}, "x", (2, 5, 5), "y", 17)
    # the pads as the file gives them (begins, then ends), and the dilation that makes the window wide
    nodes = [_n("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], dilations=[2, 1], pads=[5, 0, 0, 0])]
    with pytest.raises(GraphError, match=r"window 3x2, dilations \[2, 1\] with pads \[5, 0, 0, 0\] does not fit"):
        Graph(nodes, {}, "x", (2, 2, 2), "y", 17)


def test_shape_arithmetic_constant_of_shape_and_expand():
    """Shape -> ConstantOfShape -> Add, and Expand, as exporters write them for F.pad and broadcasts; a declared
    size over the memory limit is refused before it is made."""
    from cnnfilter.limits import LimitError

    nodes = [_n("Shape", ["x"], ["s"]), _n("ConstantOfShape", ["s"], ["c"], value=np.array([2.5], np.float32)),
             _n("Add", ["x", "c"], ["a"]), _n("Expand", ["a", "to"], ["y"])]
    g = Graph(nodes, {"to": np.array([3, 1, 4], np.int64)}, "x", (4,), "y", 17)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(g.forward(x), np.broadcast_to(x + 2.5, (3, 1, 4)))
    big = [_n("ConstantOfShape", ["n"], ["y"])]
    with pytest.raises(LimitError, match="over the memory limit"):
        Graph(big, {"n": np.array([1 << 30, 1 << 30], np.int64)}, "x", (4,), "y", 17)


def test_forward_folds_batchnorm_and_relu_into_the_convolution_only_where_nothing_else_reads_them(rng):
    """Conv -> BatchNormalization -> Relu runs as one convolution in forward; a Conv whose output a second node
    reads, or a BN output read twice, is left as it is. forward equals activations' output (float32 rounding)."""
    C, O = 3, 4
    p = {"w": rng.normal(size=(O, C, 3, 3)).astype(np.float32), "b": rng.normal(size=O).astype(np.float32)}
    for k in ("g", "beta", "m"):
        p[k] = rng.normal(size=O).astype(np.float32)
    p["v"] = rng.uniform(0.5, 2, O).astype(np.float32)
    conv = _n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    bn = _n("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"])
    x = rng.normal(size=(2, C, 7, 6)).astype(np.float32)
    for extra, fused in [([_n("Relu", ["n"], ["y"])], 1), ([_n("Relu", ["n"], ["r"]), _n("Add", ["r", "n"], ["y"])], 3),
                         ([_n("Relu", ["n"], ["r"]), _n("Add", ["r", "c"], ["y"])], 4)]:
        g = Graph([conv, bn, *extra], p, "x", (C, 7, 6), "y", 17)
        assert len(g.steps) == fused
        np.testing.assert_allclose(g.forward(x), g.activations(x)["y"], rtol=1e-5, atol=1e-5)


def test_the_listing_shows_how_a_window_walks():
    """summary() (--list-layers, the report's cards) gives a pooling node's and a Conv's strides, dilations, pads
    (in the file's order), auto_pad and ceil_mode, each only when it is not the default."""
    pool = _n("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 3], dilations=[2, 1], pads=[1, 0, 1, 0],
              ceil_mode=1)
    plain = _n("AveragePool", ["y"], ["z"], kernel_shape=[2, 2])
    same = _n("MaxPool", ["z"], ["u"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    rows = Graph([pool, plain, same], {}, "x", (2, 9, 9), "u", 17).summary()
    assert [r[1] for r in rows] == ["MaxPool 3x2 s2,3 d2,1 p1,0,1,0 ceil [MaxPool_y]",
                                    "AveragePool 2x2 [AveragePool_z]", "MaxPool 2x2 s2 SAME_UPPER [MaxPool_u]"]
