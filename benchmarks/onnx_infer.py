"""Inference of imported ONNX networks: cnnfilter's Graph against onnxruntime, side by side in one run.

    python benchmarks/onnx_infer.py [--threads 2] [--repeat 5]

Networks (random weights, built with onnx.helper as torch.onnx.export writes them):
- a ResNet-18-style net: widths 16-32-64-128, two BasicBlocks per stage (Conv-BN-ReLU, residual Adds, strided
  1x1 projections), 3x224x224, batch 8;
- the bundled digits model, exported by cnnfilter (``nn.to_onnx``), batch 256.

Both run with the same thread count (numba's and onnxruntime's intra-op threads). Prints the best of
``--repeat`` runs after a warm-up, and the ratio cnnfilter time / onnxruntime time (targets: <= 1.5 for the
ResNet, <= 1.0 for digits), then where cnnfilter's time goes per operator type.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

# as the cnnfilter command does, before numpy and numba load: idle threads sleep, freed memory is reused
from cnnfilter import runtime  # noqa: E402

runtime.tune()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench import best  # noqa: E402


def resnet18ish(rng, widths=(16, 32, 64, 128)):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def w(name, *shape):
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name))
        return name

    def conv_bn(name, x, cin, cout, k, stride, relu=True):
        nodes.append(helper.make_node("Conv", [x, w(f"{name}.w", cout, cin, k, k)], [name], pads=[k // 2] * 4,
                                      strides=[stride] * 2))
        for part, lo, hi in (("g", 0.5, 1.5), ("b", -0.1, 0.1), ("m", -0.1, 0.1), ("v", 0.5, 2.0)):
            inits.append(numpy_helper.from_array(rng.uniform(lo, hi, cout).astype(np.float32), f"{name}.bn.{part}"))
        nodes.append(helper.make_node("BatchNormalization", [name] + [f"{name}.bn.{p}" for p in "gbmv"],
                                      [f"{name}.bn"]))
        if relu:
            nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"]))
            return f"{name}.relu"
        return f"{name}.bn"

    x = conv_bn("stem", "input", 3, widths[0], 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", widths[0]
    for s, cout in enumerate(widths):
        for b in range(2):
            stride = 2 if (b == 0 and s > 0) else 1
            name = f"l{s}b{b}"
            a = conv_bn(f"{name}.c1", x, cin, cout, 3, stride)
            a = conv_bn(f"{name}.c2", a, cout, cout, 3, 1, relu=False)
            short = x if (stride, cin) == (1, cout) else conv_bn(f"{name}.proj", x, cin, cout, 1, stride, relu=False)
            nodes.append(helper.make_node("Add", [a, short], [f"{name}.add"]))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"]))
            x, cin = f"{name}.out", cout
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", w("fc.w", 1000, cin), "fc.b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "resnet18ish", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numba
    import onnx
    import onnxruntime as ort

    from cnnfilter import nn
    from cnnfilter.nn.onnxfile import graph_from_proto

    numba.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    print(f"# CPU: {cpu}, {os.cpu_count()} cores; {args.threads} threads; onnxruntime {ort.__version__}, "
          f"onnx {onnx.__version__}, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    digits = nn.to_onnx(nn.load_model(nn.resolve_model("digits")))
    cases = [("resnet18-style 16-32-64-128, 8x3x224x224", resnet18ish(rng), (8, 3, 224, 224), 1.5),
             ("digits (bundled), 256x1x8x8", digits, (256, 1, 8, 8), 1.0)]
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    for label, proto, shape, target in cases:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        net = graph_from_proto(proto, shape[1:])
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"input": x})[0]
        got = net.forward(x)
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-6))
        t_ort = best(lambda: sess.run(None, {"input": x}), args.repeat)
        t_cnn = best(lambda: net.forward(x), args.repeat)
        ratio = t_cnn / t_ort
        print(f"  {label:44s} cnnfilter {t_cnn * 1e3:8.1f} ms  onnxruntime {t_ort * 1e3:8.1f} ms  "
              f"ratio {ratio:5.2f} (<= {target}) {'PASS' if ratio <= target else 'FAIL'}  max rel. diff {err:.1e}")
        per_op = net.profile(x)  # what forward runs (convolutions with their batch norm and ReLU: _ConvFused)
        total = sum(per_op.values())
        print("    " + ", ".join(f"{op} {100 * v / total:.0f}%" for op, v in
                                 sorted(per_op.items(), key=lambda kv: -kv[1]) if v / total >= 0.01))


if __name__ == "__main__":
    main()
