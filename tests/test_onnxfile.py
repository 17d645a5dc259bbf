"""cnnfilter.nn.onnxfile: ONNX files in. Networks built with onnx.helper as the exporters write them (LeNet with
the x.view(x.size(0), -1) shape chain, a ResNet-style net with BatchNorm and residual Adds, a MobileNet-style net
with depthwise convolutions, ReLU6, HardSwish, squeeze-excite and concat, a Keras-style NHWC net), every
intermediate activation compared with onnxruntime's; and hostile files, each refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnfilter import nn  # noqa: E402
from cnnfilter.nn import ModelError  # noqa: E402


def _init(rng, name, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = rng.normal(0, scale or np.sqrt(2 / max(fan_in, 1)), shape).astype(np.float32)
    return numpy_helper.from_array(a, name)


def _model(nodes, inits, in_shape, out_name, outputs, *, opset=17, batch="N", meta=None):
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *in_shape])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, outputs])
    graph = helper.make_graph(nodes, "net", [inp], [out], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m, full_check=True)
    return m


def _bn(rng, name, c, nodes, inits, x):
    inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{name}.g"),
              numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), f"{name}.b"),
              numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), f"{name}.m"),
              numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), f"{name}.v")]
    nodes.append(helper.make_node("BatchNormalization", [x, f"{name}.g", f"{name}.b", f"{name}.m", f"{name}.v"],
                                  [name], name=name, epsilon=1e-5))
    return name


def lenet(rng):
    """LeNet as torch.onnx.export writes it, flatten by the Shape-Gather-Unsqueeze-Concat-Reshape chain."""
    inits = [_init(rng, "c1.w", 6, 1, 5, 5), _init(rng, "c1.b", 6, scale=0.1), _init(rng, "c2.w", 16, 6, 5, 5),
             _init(rng, "c2.b", 16, scale=0.1), _init(rng, "f1.w", 32, 16 * 5 * 5), _init(rng, "f1.b", 32, scale=0.1),
             _init(rng, "f2.w", 10, 32), _init(rng, "f2.b", 10, scale=0.1),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    nodes = [
        helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["conv1"], name="conv1", pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "c2.w", "c2.b"], ["conv2"], name="conv2"),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["pool2"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),  # an attribute before opset 13
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["pool2", "newshape"], ["flat"], name="view"),
        helper.make_node("Gemm", ["flat", "f1.w", "f1.b"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu3"], name="relu3"),
        helper.make_node("Gemm", ["relu3", "f2.w", "f2.b"], ["logits"], name="fc2", transB=1),
    ]
    return _model(nodes, inits, [1, 28, 28], "logits", 10, opset=11,
                  meta={"classes": '["zero","one","two","three","four","five","six","seven","eight","nine"]'})


def resnet(rng):
    """Conv-BN-ReLU stem, a ceil-mode max pool, two residual blocks (one with a strided 1x1 projection), global
    average pool, flatten, a dense layer."""
    nodes, inits = [], []

    def conv(name, x, cin, cout, k, stride=1, pad=None):
        inits.append(_init(rng, f"{name}.w", cout, cin, k, k))
        p = k // 2 if pad is None else pad
        nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [name], name=name, pads=[p] * 4,
                                      strides=[stride] * 2))
        return name

    x = conv("stem", "input", 3, 8, 3, 2)
    x = _bn(rng, "stem.bn", 8, nodes, inits, x)
    nodes.append(helper.make_node("Relu", [x], ["stem.relu"], name="stem.relu"))
    nodes.append(helper.make_node("MaxPool", ["stem.relu"], ["pool"], name="pool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1))
    x = "pool"
    for i, (cin, cout, stride) in enumerate([(8, 8, 1), (8, 16, 2)]):
        a = conv(f"b{i}.c1", x, cin, cout, 3, stride)
        a = _bn(rng, f"b{i}.bn1", cout, nodes, inits, a)
        nodes.append(helper.make_node("Relu", [a], [f"b{i}.r1"], name=f"b{i}.r1"))
        a = conv(f"b{i}.c2", f"b{i}.r1", cout, cout, 3)
        a = _bn(rng, f"b{i}.bn2", cout, nodes, inits, a)
        short = x if (cin, stride) == (cout, 1) else _bn(rng, f"b{i}.pbn", cout, nodes, inits,
                                                          conv(f"b{i}.proj", x, cin, cout, 1, stride, 0))
        nodes.append(helper.make_node("Add", [a, short], [f"b{i}.add"], name=f"b{i}.add"))
        nodes.append(helper.make_node("Relu", [f"b{i}.add"], [f"b{i}.out"], name=f"b{i}.out"))
        x = f"b{i}.out"
    inits += [_init(rng, "fc.w", 5, 16), _init(rng, "fc.b", 5, scale=0.1)]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
              helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1)]
    return _model(nodes, inits, [3, 33, 31], "prob", 5)


def mobilenet(rng):
    """Depthwise and pointwise convolutions, ReLU6 (Clip with inputs), HardSwish, squeeze-excite with
    HardSigmoid, a concat of two branches, SAME_UPPER padding, an average pool without the padding counted,
    LeakyReLU, PRelu, Sigmoid, Tanh, reflect padding, ReduceMean."""
    nodes, inits = [], []
    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    inits += [_init(rng, "pw1.w", 12, 3, 1, 1), _init(rng, "dw.w", 12, 1, 3, 3), _init(rng, "dw.b", 12, scale=0.1),
              _init(rng, "se1.w", 4, 12, 1, 1), _init(rng, "se1.b", 4, scale=0.1), _init(rng, "se2.w", 12, 4, 1, 1),
              _init(rng, "se2.b", 12, scale=0.1), _init(rng, "br.w", 6, 3, 5, 5),
              numpy_helper.from_array(rng.uniform(0.05, 0.3, (6, 1, 1)).astype(np.float32), "slope"),
              numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads"),
              numpy_helper.from_array(np.array([2, 3], np.int64), "hw"),
              _init(rng, "fc.w", 18, 4)]
    nodes += [
        helper.make_node("Conv", ["input", "pw1.w"], ["pw1"], name="pw1"),
        helper.make_node("Clip", ["pw1", "zero", "six"], ["relu6"], name="relu6"),
        helper.make_node("Conv", ["relu6", "dw.w", "dw.b"], ["dw"], name="dw", group=12, strides=[2, 2],
                         auto_pad="SAME_UPPER", kernel_shape=[3, 3]),
        helper.make_node("HardSwish", ["dw"], ["hswish"], name="hswish"),
        helper.make_node("GlobalAveragePool", ["hswish"], ["se.pool"], name="se.pool"),
        helper.make_node("Conv", ["se.pool", "se1.w", "se1.b"], ["se1"], name="se1"),
        helper.make_node("Relu", ["se1"], ["se.relu"], name="se.relu"),
        helper.make_node("Conv", ["se.relu", "se2.w", "se2.b"], ["se2"], name="se2"),
        helper.make_node("HardSigmoid", ["se2"], ["se.gate"], name="se.gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["hswish", "se.gate"], ["se.out"], name="se.out"),
        helper.make_node("Pad", ["input", "pads"], ["padded"], name="pad", mode="reflect"),
        helper.make_node("Conv", ["padded", "br.w"], ["br"], name="br", strides=[2, 2], dilations=[1, 1]),
        helper.make_node("PRelu", ["br", "slope"], ["prelu"], name="prelu"),
        helper.make_node("AveragePool", ["prelu"], ["br.pool"], name="br.pool", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("AveragePool", ["se.out"], ["main.pool"], name="main.pool", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Concat", ["main.pool", "br.pool"], ["cat"], name="cat", axis=1),
        helper.make_node("LeakyRelu", ["cat"], ["leaky"], name="leaky", alpha=0.1),
        helper.make_node("Sigmoid", ["leaky"], ["sig"], name="sig"),
        helper.make_node("Tanh", ["cat"], ["tanh"], name="tanh"),
        helper.make_node("Sub", ["sig", "tanh"], ["diff"], name="diff"),
        helper.make_node("ReduceMean", ["diff"], ["mean"], name="mean", axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "fc.w"], ["logits"], name="fc"),
    ]
    return _model(nodes, inits, [3, 24, 20], "logits", 4, opset=14)


def keras(rng):
    """tf2onnx's layout: an NHWC input transposed to NCHW, Conv, BatchNorm on its own, Transpose back, a Div
    and LogSoftmax over the last axis."""
    nodes, inits = [], [_init(rng, "c.w", 4, 3, 3, 3), _init(rng, "c.b", 4, scale=0.1),
                        numpy_helper.from_array(np.float32(2), "two")]
    nodes += [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
              helper.make_node("Conv", ["nchw", "c.w", "c.b"], ["conv"], name="conv", pads=[1, 1, 1, 1])]
    x = _bn(rng, "bn", 4, nodes, inits, "conv")
    nodes += [helper.make_node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1]),
              helper.make_node("Div", ["nhwc", "two"], ["half"], name="half"),
              helper.make_node("LogSoftmax", ["half"], ["out"], name="logsoftmax", axis=-1)]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10, 12, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph(nodes, "k", [inp], [out], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 15)])
    return m


def _with_every_output(m):
    """The model with every node's output exposed as a graph output, so that onnxruntime returns them all."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    have = {o.name for o in m2.graph.output}
    for n in m2.graph.node:
        for t in n.output:
            if t not in have:
                m2.graph.output.append(helper.make_empty_tensor_value_info(t))
    return m2


def _ort_all(m, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the unfused graph, node by node
    sess = ort.InferenceSession(_with_every_output(m).SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": x})))


@pytest.mark.parametrize("build", [lenet, resnet, mobilenet])
def test_every_activation_equals_onnxruntime(build, tmp_path, rng):
    m = build(rng)
    path = tmp_path / "model.onnx"
    onnx.save(m, path)
    model = nn.load_onnx(path)
    x = rng.uniform(-1, 1, (3, *model.input_shape)).astype(np.float32)
    ref = _ort_all(m, x)
    acts = model.net.activations(x)
    assert set(model.net.names) <= set(acts)
    compared = 0
    for name, want in ref.items():
        if name in acts:
            np.testing.assert_allclose(acts[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
            compared += 1
    assert compared >= len(model.net.names)
    np.testing.assert_allclose(model.net.forward(x), ref[m.graph.output[0].name], rtol=1e-4, atol=1e-5)


def test_lenet_loads_with_its_names_classes_and_probabilities(tmp_path, rng):
    m = lenet(rng)
    onnx.save(m, tmp_path / "lenet.onnx")
    model = nn.load_model(tmp_path / "lenet.onnx")  # load_model takes .onnx too
    assert model.input_shape == (1, 28, 28)
    assert model.classes[:3] == ["zero", "one", "two"]
    assert model.net.names[:3] == ["conv1", "relu1", "pool1"]
    assert "shape" not in model.net.names  # the shape arithmetic is no layer
    assert model.net.shapes[model.net.names.index("pool2")] == (16, 5, 5)
    x = rng.uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    p = model.probabilities(x)
    assert p.shape == (4, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    logits = _ort_all(m, x)["logits"]
    np.testing.assert_array_equal(p.argmax(axis=1), logits.argmax(axis=1))
    assert [r[0] for r in model.net.summary()][:2] == ["conv1", "relu1"]


def test_a_softmax_at_the_end_is_not_applied_twice(tmp_path, rng):
    onnx.save(resnet(rng), tmp_path / "r.onnx")
    model = nn.load_onnx(tmp_path / "r.onnx")
    x = rng.uniform(0, 1, (2, 3, 33, 31)).astype(np.float32)
    np.testing.assert_allclose(model.probabilities(x), model.net.forward(x), rtol=1e-6)


def test_nhwc_keras_layout(tmp_path, rng):
    """tf2onnx's channels-last input: the model takes (N, H, W, 3); cnnfilter feeds it NCHW images, transposed."""
    m = keras(rng)
    onnx.save(m, tmp_path / "k.onnx")
    model = nn.load_onnx(tmp_path / "k.onnx")
    assert model.input_shape == (3, 10, 12)
    x = rng.uniform(0, 1, (2, 3, 10, 12)).astype(np.float32)
    ref = _ort_all(m, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    acts = model.net.activations(x)
    for name in ("conv", "bn", "nhwc", "out"):
        np.testing.assert_allclose(acts[name], ref[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_symbolic_height_and_width_run_at_each_images_size_or_the_size_given(tmp_path, rng):
    """A model whose height and width are symbolic runs every image at its own size (listed at 224x224): feature
    maps and probabilities equal onnxruntime's at that size, a folder of mixed sizes included; --input-size fixes
    one size, to which images are resized."""
    import onnxruntime as ort
    from PIL import Image

    import cnnfilter
    from cnnfilter.nn.predict import predict, predict_files

    m = resnet(rng)
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, tmp_path / "r.onnx")
    model = nn.load_onnx(tmp_path / "r.onnx")
    assert model.free_size and model.input_shape == (3, 224, 224)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    paths = []
    for i, (h, w) in enumerate([(37, 50), (20, 31), (37, 50)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    refs = []
    for p in paths:
        x = np.asarray(Image.open(p), np.float32).transpose(2, 0, 1)[None] / 255
        refs.append(sess.run(None, {"input": x})[0][0])
        maps = cnnfilter.featuremaps(model, p)
        first = next(iter(maps.values()))
        assert first.shape[1:] == tuple(-(-s // 2) for s in x.shape[2:])  # the stride-2 stem, at the image's size
    expect = np.stack([model.to_probabilities(r[None])[0] for r in refs])
    np.testing.assert_allclose(predict(model, paths), expect, rtol=1e-4, atol=1e-6)
    got = np.stack([pr for _, pr, _ in predict_files(model, paths)])
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-6)
    x0 = np.asarray(Image.open(paths[0]), np.float32).transpose(2, 0, 1)[None] / 255  # a batch at its own size
    np.testing.assert_allclose(model.probabilities(np.concatenate([x0, x0])), expect[[0, 0]], rtol=1e-4, atol=1e-6)
    from cnnfilter.nn.predict import prepare

    chw = np.random.default_rng(0).integers(0, 256, (3, 9, 11), dtype=np.uint8)
    assert prepare(model, chw).max() <= 1 and prepare(model, chw).shape == (3, 9, 11)  # scaled like any uint8
    fixed = nn.load_onnx(tmp_path / "r.onnx", input_size=(40, 50))
    assert not fixed.free_size and fixed.input_shape == (3, 40, 50)
    assert predict(fixed, paths).shape == (3, len(model.classes))
    onnx.save(resnet(rng), tmp_path / "fixed.onnx")
    with pytest.raises(ModelError, match="33x31 images; --input-size 40x50"):
        nn.load_onnx(tmp_path / "fixed.onnx", input_size=(40, 50))


def test_normalisation_from_metadata_or_arguments(tmp_path, rng):
    m = resnet(rng)
    m.metadata_props.add(key="mean", value="[0.485, 0.456, 0.406]")
    m.metadata_props.add(key="std", value="[0.229, 0.224, 0.225]")
    onnx.save(m, tmp_path / "r.onnx")
    model = nn.load_onnx(tmp_path / "r.onnx")
    np.testing.assert_allclose(model.mean, [0.485, 0.456, 0.406])
    model = nn.load_onnx(tmp_path / "r.onnx", mean=[0.5], std=[0.25], classes=list("abcde"))
    np.testing.assert_allclose(model.std, [0.25] * 3)
    assert model.classes == list("abcde")
    x = np.full((1, 3, 33, 31), 0.75, np.float32)
    np.testing.assert_allclose(model.normalize(x), 1.0)


def test_paddle_style_constants_are_weights(tmp_path, rng):
    """Paddle exports hold no initializers: every weight is a Constant node."""
    m = lenet(rng)
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in m.graph.initializer]
    del m.graph.initializer[:]
    nodes = consts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, tmp_path / "p.onnx")
    model = nn.load_onnx(tmp_path / "p.onnx")
    x = rng.uniform(0, 1, (2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(model.net.forward(x), _ort_all(m, x)["logits"], rtol=1e-4, atol=1e-5)


# -- hostile files -----------------------------------------------------------------------------------------
def _save(m, path):
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p, rng: p.write_bytes(b""), "not an ONNX model"),
    (lambda p, rng: p.write_bytes(np.random.default_rng(1).bytes(5000)), "not an ONNX model"),
    (lambda p, rng: p.write_bytes(lenet(rng).SerializeToString()[:3000]), "not an ONNX model"),
])
def test_broken_files_are_refused_in_one_line(make, message, tmp_path, rng):
    path = tmp_path / "bad.onnx"
    make(path, rng)
    with pytest.raises(ModelError, match=message) as err:
        nn.load_onnx(path)
    assert "\n" not in str(err.value)


def test_external_data_is_refused_never_read(tmp_path, rng):
    m = lenet(rng)
    t = m.graph.initializer[0]
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4 * 150)
    t.ClearField("raw_data")
    del t.float_data[:]
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=str(tmp_path / "secret.bin"))
    with pytest.raises(ModelError, match="stored outside the model file"):
        nn.load_onnx(_save(m, tmp_path / "ext.onnx"))


def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("CNNFILTER_MAX_MEMORY", "64M")
    m = lenet(rng)
    big = m.graph.initializer[0]  # declares a terabyte, holds nothing
    big.ClearField("raw_data")
    del big.dims[:]
    big.dims.extend([1 << 20, 1 << 20, 5, 5])
    with pytest.raises(ModelError, match="declare .* over the memory limit"):
        nn.load_onnx(_save(m, tmp_path / "big.onnx"))


def test_unsupported_operators_cycles_and_inputs_are_refused(tmp_path, rng):
    m = lenet(rng)
    m.graph.node[1].op_type = "Upsample"
    with pytest.raises(ModelError, match=r"operator 'Upsample' \(node 'relu1'\) is not supported; supported: Abs"):
        nn.load_onnx(_save(m, tmp_path / "elu.onnx"))
    m = lenet(rng)
    m.graph.node[0].input[0] = "relu1"  # conv1 reads relu1, which reads conv1
    with pytest.raises(ModelError, match="not acyclic"):
        nn.load_onnx(_save(m, tmp_path / "cycle.onnx"))
    m = lenet(rng)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(ModelError, match="5 channels"):
        nn.load_onnx(_save(m, tmp_path / "c5.onnx"))


def test_not_a_regular_file(tmp_path):
    with pytest.raises(ModelError, match="it is a directory"):
        nn.load_onnx(tmp_path)
    with pytest.raises(ModelError, match="no such file"):
        nn.load_onnx(tmp_path / "missing.onnx")


# -- ONNX out ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["c4k3p1-relu-max2-c8k3s2p1-relu-avg3s1p1-drop0.2-fc12-relu-fc5", "fc5",
                                  "c3k5s2p2-avg2-c6k3-max3s2p1-fc5",
                                  "c6k3x5s2x1p1,2,0,1d1x2g3-relu-max3x2s1p1,0,0,1d2-c6k3p1g6-avg2s1p0,1,1,0-fc5"])
def test_export_round_trip_runs_in_onnxruntime(arch, tmp_path, rng):
    """A built network (random weights) leaves as ONNX that passes the full checker, runs in onnxruntime with
    the same outputs layer by layer, and loads back with its classes, normalisation and metadata."""
    net = nn.build(arch, (3, 17, 15), 5, rng=rng)
    for p in net.params():
        p[...] = rng.normal(0, 0.5, p.shape)
    model = nn.Model(net, list("abcde"), np.array([0.4, 0.5, 0.6], np.float32),
                     np.array([0.2, 0.25, 0.3], np.float32), {"epochs": 3})
    path = tmp_path / "m.onnx"
    nn.save_onnx(model, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    x = model.normalize(rng.uniform(0, 1, (4, 3, 17, 15)).astype(np.float32))
    ref = _ort_all(proto, x)
    ours = net.activations(x)
    for name in net.names:
        np.testing.assert_allclose(ref[name], ours[name], rtol=1e-4, atol=1e-5, err_msg=name)
    back = nn.load_onnx(path)
    assert back.classes == list("abcde") and back.net.names == net.names
    np.testing.assert_allclose(back.mean, model.mean)
    np.testing.assert_allclose(back.std, model.std)
    np.testing.assert_allclose(back.probabilities(x * 0 + 0.5), model.probabilities(x * 0 + 0.5), rtol=1e-5)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == net.arch and '"epochs": 3' in meta["training"]


def test_batchnorm_is_folded_into_the_convolution_before_it_at_export(tmp_path, rng):
    """A BatchNorm right after a convolution leaves as that Conv's weights and bias (the Conv makes bn1); one
    after a ReLU or a dense layer as a BatchNormalization node. onnxruntime gives the network's inference
    activations (running statistics), and the file loads back."""
    net = nn.build("c4k3p1-bn-relu-max2-c8k3p1-relu-bn-fc12-bn-relu-fc5", (3, 9, 7), 5, rng=rng)
    x = rng.standard_normal((6, 3, 9, 7)).astype(np.float32)
    for _ in range(3):  # running statistics away from 0 and 1
        net.forward(x + rng.normal(1, 0.5), train=True)
    for layer in net.layers:
        if isinstance(layer, nn.layers.BatchNorm):
            layer.weight[:] = rng.uniform(0.5, 2, layer.weight.shape)
            layer.bias[:] = rng.standard_normal(layer.bias.shape)
    model = nn.Model(net, list("abcde"), np.zeros(3, np.float32), np.ones(3, np.float32))
    nn.save_onnx(model, tmp_path / "bn.onnx")
    proto = onnx.load(tmp_path / "bn.onnx")
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 2 and ops.count("BatchNormalization") == 2
    assert next(n for n in proto.graph.node if n.op_type == "Conv").output == ["bn1"]
    ref, ours = _ort_all(proto, x), net.activations(x)
    names = [n for n in net.names if n != "conv1"]
    for name in names:
        np.testing.assert_allclose(ref[name], ours[name], rtol=1e-4, atol=1e-4, err_msg=name)
    back = nn.load_onnx(tmp_path / "bn.onnx")
    assert back.net.names == names
    np.testing.assert_allclose(back.net.forward(x), net.forward(x), rtol=1e-4, atol=1e-4)


def test_a_residual_graph_is_exported_and_saved(tmp_path, rng):
    """A network whose graph the grammar cannot write (a residual Add, a grouped convolution) leaves as ONNX that
    onnxruntime runs to the same activations, and goes through a .cnnf file (version 2: the graph) unchanged."""
    from .test_nn import residual_net

    net = residual_net(rng, np.float32, channels=3)
    model = nn.Model(net, list("abc"), np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    nn.save_onnx(model, tmp_path / "r.onnx")
    proto = onnx.load(tmp_path / "r.onnx")
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    ref, ours = _ort_all(proto, x), net.activations(x)
    for name in net.names:
        np.testing.assert_allclose(ref[name], ours[name], rtol=1e-4, atol=1e-5, err_msg=name)
    nn.save_model(model, tmp_path / "r.cnnf")
    back = nn.load_model(tmp_path / "r.cnnf").net
    assert [(n.name, n.op, n.inputs) for n in back.nodes] == [(n.name, n.op, n.inputs) for n in net.nodes]
    np.testing.assert_array_equal(back.forward(x), net.forward(x))


def test_an_imported_graph_is_not_exported_again(tmp_path, rng):
    onnx.save(lenet(rng), tmp_path / "l.onnx")
    with pytest.raises(nn.GraphError, match="ONNX file already"):
        nn.to_onnx(nn.load_onnx(tmp_path / "l.onnx"))


# -- networks exported by PyTorch (bench extra only: skipped without torch) ----------------------------------
def _torch_nets():
    torch = pytest.importorskip("torch")
    from torch import nn as tnn
    from torch.nn import functional as F

    class LeNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = tnn.Conv2d(1, 6, 5, padding=2), tnn.Conv2d(6, 16, 5)
            self.f1, self.f2, self.f3 = tnn.Linear(400, 120), tnn.Linear(120, 84), tnn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.avg_pool2d(F.relu(self.c2(x)), 2)
            x = x.view(x.size(0), -1)
            return self.f3(F.relu(self.f2(F.relu(self.f1(x)))))

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = tnn.BatchNorm2d(cout)
            self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = tnn.BatchNorm2d(cout)
            self.proj = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))
                         if (cin, stride) != (cout, 1) else tnn.Identity())

        def forward(self, x):
            return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.proj(x))

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 7, 2, 3, bias=False), tnn.BatchNorm2d(8), tnn.ReLU(),
                                       tnn.MaxPool2d(3, 2, 1))
            self.blocks = tnn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
            self.fc = tnn.Linear(16, 7)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    class MobileNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.pw = tnn.Conv2d(3, 12, 1)
            self.dw = tnn.Conv2d(12, 12, 3, 2, 1, groups=12)
            self.se1, self.se2 = tnn.Conv2d(12, 4, 1), tnn.Conv2d(4, 12, 1)
            self.br = tnn.Conv2d(3, 6, 3, 2, 1, dilation=1)
            self.prelu = tnn.PReLU(6)
            self.fc = tnn.Linear(18, 5)

        def forward(self, x):
            a = F.hardswish(self.dw(F.relu6(self.pw(x))))
            a = a * F.hardsigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(a, 1)))))
            b = self.prelu(self.br(x))
            y = F.leaky_relu(torch.cat([F.avg_pool2d(a, 3, 1, 1), F.avg_pool2d(b, 3, 1, 1, count_include_pad=False)],
                                       1), 0.1)
            return self.fc(y.mean(dim=(2, 3))).softmax(dim=1)

    return torch, [("lenet", LeNet, (1, 28, 28)), ("resnet", ResNet, (3, 40, 36)),
                   ("mobilenet", MobileNet, (3, 24, 20))]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("which", ["lenet", "resnet", "mobilenet"])
def test_torch_exports_equal_onnxruntime_and_torch(which, dynamo, tmp_path):
    import warnings

    torch, nets = _torch_nets()
    name, cls, shape = next(n for n in nets if n[0] == which)
    torch.manual_seed(0)
    net = cls().eval()
    for m in net.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(3, *shape)
    path = tmp_path / f"{name}.onnx"
    extra = {"external_data": False} if dynamo else {"dynamic_axes": {"input": {0: "N"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=dynamo, input_names=["input"], output_names=["out"], **extra)
    proto = onnx.load(path)
    model = nn.load_onnx(path)
    xn = x.numpy()
    ref = _ort_all(proto, xn)
    acts = model.net.activations(xn)
    compared = [t for t in ref if t in acts]
    assert len(compared) >= len(model.net.names)
    for t in compared:
        np.testing.assert_allclose(acts[t], ref[t], rtol=1e-4, atol=2e-5, err_msg=t)
    with torch.no_grad():
        np.testing.assert_allclose(model.net.forward(xn[:2]), net(x[:2]).numpy(), rtol=1e-4, atol=2e-5)


def test_symbolic_size_that_does_not_fit_says_how_to_give_it(tmp_path, rng):
    m = lenet(rng)  # its dense layer needs 28x28 inputs
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, tmp_path / "l.onnx")
    with pytest.raises(ModelError, match=r"run at 224x224: give the size it was trained at with --input-size"):
        nn.load_onnx(tmp_path / "l.onnx")
    assert nn.load_onnx(tmp_path / "l.onnx", input_size=(28, 28)).input_shape == (1, 28, 28)


def test_a_sigmoid_output_is_taken_as_probabilities(tmp_path, rng):
    m = lenet(rng)
    m.graph.node.append(helper.make_node("Sigmoid", ["logits"], ["p"]))
    m.graph.output[0].name = "p"
    onnx.save(m, tmp_path / "s.onnx")
    model = nn.load_onnx(tmp_path / "s.onnx")
    x = rng.uniform(0, 1, (2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(model.probabilities(x), model.net.forward(x), rtol=1e-6)


def _tiny(nodes, inits=(), opset=17, out="y"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 6, 6])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("nodes", "message"), [
    ([helper.make_node("MaxPool", ["input"], ["y"])], "lacks its attribute 'kernel_shape'"),
    ([helper.make_node("Concat", ["input", "input"], ["y"])], "lacks its attribute 'axis'"),
    ([helper.make_node("Conv", ["input", ""], ["y"])], "lacks a required input"),
    ([helper.make_node("Relu", ["input"], [])], "has no first output"),
    ([helper.make_node("Relu", ["input"], ["y", "z"])], "its output 2 ('z') is not supported"),
    ([helper.make_node("Softmax", ["input"], ["y"], axis=7)], "axis 7 of a 4-D tensor"),
    ([helper.make_node("Pad", ["input", "p"], ["y"], mode="reflect")], "reflect padding wider"),
])
def test_malformed_nodes_are_one_line(nodes, message, tmp_path):
    inits = [numpy_helper.from_array(np.array([0, 0, 9, 0, 0, 0, 0, 0], np.int64), "p")]
    path = tmp_path / "m.onnx"
    path.write_bytes(_tiny(nodes, inits).SerializeToString())
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        nn.load_onnx(path)
    assert "\n" not in str(err.value)


def test_a_file_cannot_mark_its_own_nodes_trusted_and_opsets_are_bounded(tmp_path, rng):
    w = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["w"], ["w16"], to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["input", "w16"], ["y"], _trusted=1)]
    path = tmp_path / "t.onnx"
    path.write_bytes(_tiny(nodes, [numpy_helper.from_array(w, "w")]).SerializeToString())
    model = nn.load_onnx(path)  # the computed float16 weight goes through conv2d's checks and conversion
    assert not any("_trusted" in n.attrs for n in model.net.nodes)
    x = rng.normal(size=(1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(model.net.forward(x), nn.load_onnx(path).net.forward(x))
    path.write_bytes(_tiny([helper.make_node("Relu", ["input"], ["y"])], opset=99).SerializeToString())
    with pytest.raises(ModelError, match="opset 99: cnnfilter reads opsets 6 to"):
        nn.load_onnx(path)


def test_weights_are_budgeted_together(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("CNNFILTER_MAX_MEMORY", "64M")
    inits = []
    for i in range(3):  # each declares 24 MB (holding nothing: the file stays small), 72 MB together
        t = TensorProto(name=f"unused{i}", data_type=TensorProto.FLOAT)
        t.dims.append(6_000_000)
        inits.append(t)
    path = tmp_path / "w.onnx"
    path.write_bytes(_tiny([helper.make_node("Relu", ["input"], ["y"])], inits).SerializeToString())
    with pytest.raises(ModelError, match="weights declare .* over the memory limit"):
        nn.load_onnx(path)


def test_numeric_tensor_names_are_names_before_indices(tmp_path):
    nodes = [helper.make_node("Relu", ["input"], ["5"]), helper.make_node("Neg", ["5"], ["6"]),
             helper.make_node("Relu", ["6"], ["y"])]
    path = tmp_path / "n.onnx"
    path.write_bytes(_tiny(nodes).SerializeToString())
    from cnnfilter.maps import select_layers

    model = nn.load_onnx(path)
    assert select_layers(model, "6") == ["6"] and select_layers(model, "0") == ["5"]


def test_an_image_turned_by_its_exif_orientation_keeps_its_upright_shape(tmp_path, rng):
    """A photo stored 100 wide and 40 tall with EXIF orientation 6 (a quarter turn) is 40 wide and 100 tall
    upright: a free-size model takes it at that size (it was squashed back to 100x40), and a fixed 100x40 (HxW)
    model needs no resizing, so no note says so."""
    from PIL import Image

    from cnnfilter.nn.predict import fit_note, load_input, prepare

    stored = Image.fromarray(rng.integers(0, 256, (40, 100, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    m = resnet(rng)
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, tmp_path / "r.onnx")
    free = nn.load_onnx(tmp_path / "r.onnx")
    image = load_input(tmp_path / "turned.jpg")
    assert prepare(free, image).shape == (3, 100, 40)
    fixed = nn.load_onnx(tmp_path / "r.onnx", input_size=(100, 40))
    assert fit_note(fixed, image) is None
    note = fit_note(nn.load_onnx(tmp_path / "r.onnx", input_size=(40, 100)), image)  # sizes as W x H
    assert note == "40x100 RGB, the model takes 100x40 RGB: resized to 100x40 (bilinear)"
