"""The tiny CNN against PyTorch CPU on the same network, in one run.

    python benchmarks/train.py [--batches 200] [--threads 2]

Conv(1->8, 3x3, pad 1)-ReLU-MaxPool2-Conv(8->16, 3x3, pad 1)-ReLU-MaxPool2-Linear(784->10) on 28x28x1, batch 64,
SGD momentum 0.9: training samples/s (forward, loss, backward, update) and inference samples/s (forward only),
after a warm-up; the ratio is cnnfilter / PyTorch (above 1: cnnfilter is faster). Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import time

# as the cnnfilter command does, before numpy and numba load: idle threads sleep, freed memory is reused
from cnnfilter import runtime  # noqa: E402

runtime.tune()

import numpy as np  # noqa: E402

ARCH = "c8k3p1-relu-max2-c16k3p1-relu-max2-fc10"


def rate(step, batches: int, batch: int, repeats: int = 3) -> float:
    """Best of ``repeats`` runs of ``batches`` steps, in samples/s."""
    for _ in range(5):
        step()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            step()
        best = max(best, batches * batch / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)

    import numba

    from cnnfilter.nn import build
    from cnnfilter.nn.layers import cross_entropy
    from cnnfilter.nn.optim import SGD

    numba.set_num_threads(args.threads)
    net = build(ARCH, (1, 28, 28), 10, rng=rng)
    opt = SGD(net.params(), lr=0.01, momentum=0.9)

    def ours_train():
        _, _, g = cross_entropy(net.forward(x, train=True), y)
        net.backward(g)
        opt.step(net.grads())

    ours = (rate(ours_train, args.batches, args.batch), rate(lambda: net.forward(x), args.batches, args.batch))

    import torch

    torch.set_num_threads(args.threads)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(784, 10))
    topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_train():
        topt.zero_grad()
        loss_fn(model(tx), ty).backward()
        topt.step()

    def torch_infer():
        with torch.no_grad():
            model(tx)

    theirs = (rate(torch_train, args.batches, args.batch), rate(torch_infer, args.batches, args.batch))
    print(f"# tiny CNN, 28x28x1, batch {args.batch}, {args.threads} threads; samples/s (best of 3 x "
          f"{args.batches} batches)")
    for what, a, b in (("training", ours[0], theirs[0]), ("inference", ours[1], theirs[1])):
        print(f"  {what:9s}  cnnfilter {a:9,.0f}   PyTorch {torch.__version__} {b:9,.0f}   ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
