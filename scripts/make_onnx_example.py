"""The README's "feature maps of your own PyTorch model" example, end to end: a small CNN trained in PyTorch on
the bundled digits (upscaled to 28x28), exported with torch.onnx.export, its feature maps drawn by cnnfilter, and
two of the montages copied to docs/ (pytorch-relu1.png, pytorch-logits.png) for the README.

    pip install torch==2.13.0 'cnnfilter[onnx]'
    python scripts/make_onnx_example.py            # about a minute on 2 cores

Needs torch (the bench extra); cnnfilter itself never imports it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.view(x.size(0), -1))


def main() -> None:
    torch.manual_seed(0)
    files = sorted((ROOT / "samples" / "digits").glob("*/*.png"))
    x = np.stack([np.asarray(Image.open(f).convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32)
                  for f in files])[:, None] / 255.0
    y = np.array([int(f.parent.name) for f in files])
    xt, yt = torch.from_numpy((x - 0.5) / 0.5), torch.from_numpy(y)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for epoch in range(8):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        print(f"training accuracy {(net(xt).argmax(1) == yt).float().mean():.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "digits28.onnx"
        torch.onnx.export(net, (xt[:1],), str(model), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}})
        maps = Path(tmp) / "maps"
        cmd = [sys.executable, "-m", "cnnfilter", "featuremaps", str(ROOT / "samples/digits/3/0003.png"), "-m",
               str(model), "--mean", "0.5", "--std", "0.5", "-o", str(maps), "-q"]
        subprocess.run(cmd, check=True)
        (ROOT / "docs").mkdir(exist_ok=True)
        out = maps / "0003"
        print("drawn:", ", ".join(sorted(p.name for p in out.glob("*.png"))))
        for src, dst in (("Relu_output_0.png", "pytorch-relu1.png"), ("logits.png", "pytorch-logits.png")):
            shutil.copyfile(out / src, ROOT / "docs" / dst)

if __name__ == "__main__":
    main()
