"""train-tiny's defaults against PyTorch's default recipe on the same data, in one run.

    python benchmarks/recipe.py [--seeds 0 1 2] [--only shapes]

Three evaluation sets, each a training folder and a separate held-out folder: ``shapes`` (benchmarks/datasets.py,
1,000 28x28 greyscale images to train on, 400 held out), ``textures`` (800 32x32 RGB, 320 held out) and ``digits``
(the bundled 8x8 digits, a stratified 80/20 split with seed 0). For each set and seed:

- cnnfilter: ``cnnfilter train-tiny TRAIN -o m.cnnf --seed S`` with its defaults, a fresh process (wall time
  includes start-up and compilation), then the model's accuracy on the held-out folder;
- PyTorch: the same architecture (train-tiny's default for the input size) with PyTorch's default initialisation,
  Adam at 0.002, batch 32, 30 epochs, the last epoch, on the same 80 % of the training folder that train-tiny
  trains on (its own split), 2 threads.

Prints held-out accuracy and wall time per seed, the means, and the targets (shapes >= 95 % and >= PyTorch's mean;
digits >= 98.5 % for seed 0; each cnnfilter run <= 60 s). Needs torch (the bench extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from datasets import generate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def digits_split(out: Path, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    for c in sorted(p for p in (ROOT / "samples" / "digits").iterdir() if p.is_dir()):
        files = sorted(c.glob("*.png"))
        order = rng.permutation(len(files))
        cut = int(0.8 * len(files))
        for part, pick in (("train", order[:cut]), ("test", order[cut:])):
            (out / part / c.name).mkdir(parents=True, exist_ok=True)
            for i in pick:
                shutil.copy(files[i], out / part / c.name / files[i].name)
    return out / "train", out / "test"


def held_out(model_path: Path, test: Path, channels: int) -> float:
    from cnnfilter import nn
    from cnnfilter.nn.data import load_folder

    m = nn.load_model(model_path)
    ts = load_folder(test, channels=channels, size=m.input_shape[1:])
    probs = m.probabilities(m.normalize(ts.x))
    return float((probs.argmax(1) == ts.y).mean())


def torch_net(arch: str, shape, classes: int):
    import torch

    layers, (c, h, w) = [], shape
    for tok in arch.split("-"):
        if m := re.fullmatch(r"c(\d+)k(\d+)(?:p(\d+))?", tok):
            out, k, p = int(m[1]), int(m[2]), int(m[3] or 0)
            layers.append(torch.nn.Conv2d(c, out, k, padding=p))
            c, h, w = out, h + 2 * p - k + 1, w + 2 * p - k + 1
        elif tok == "relu":
            layers.append(torch.nn.ReLU())
        elif tok == "bn":
            layers.append(torch.nn.BatchNorm2d(c) if h * w > 1 or not any(
                isinstance(la, torch.nn.Flatten) for la in layers) else torch.nn.BatchNorm1d(c))
        elif m := re.fullmatch(r"max(\d+)", tok):
            k = int(m[1])
            layers.append(torch.nn.MaxPool2d(k))
            h, w = h // k, w // k
        elif m := re.fullmatch(r"drop([\d.]+)", tok):
            layers.append(torch.nn.Dropout(float(m[1])))
        elif m := re.fullmatch(r"fc(\d+)", tok):
            if not any(isinstance(la, torch.nn.Flatten) for la in layers):
                layers.append(torch.nn.Flatten())
            layers.append(torch.nn.Linear(c * h * w, int(m[1])))
            c, h, w = int(m[1]), 1, 1
        else:
            raise ValueError(tok)
    return torch.nn.Sequential(*layers)


def pytorch_run(train: Path, test: Path, seed: int, channels: int, arch: str | None = None) -> tuple[float, float]:
    import torch

    from cnnfilter import nn
    from cnnfilter.nn.data import load_folder

    torch.set_num_threads(2)
    start = time.perf_counter()
    prep = nn.prepare(train, channels=channels, val_split=0.2, seed=seed)  # train-tiny's own split
    torch.manual_seed(seed)
    default = nn.default_arch(*prep.input_shape[1:], len(prep.classes))
    arch = default if arch is None else arch + ("" if arch.split("-")[-1].startswith("fc") else
                                                f"-fc{len(prep.classes)}")
    net = torch_net(arch, prep.input_shape, len(prep.classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.002)
    x, y = torch.from_numpy(prep.x), torch.from_numpy(prep.y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(30):
        net.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    ts = load_folder(test, channels=channels, size=prep.input_shape[1:])
    xt = torch.from_numpy(((ts.x - prep.mean.reshape(1, -1, 1, 1)) / prep.std.reshape(1, -1, 1, 1)).astype(np.float32))
    net.eval()
    with torch.no_grad():
        acc = float((net(xt).argmax(1).numpy() == ts.y).mean())
    return acc, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", choices=("shapes", "textures", "digits"))
    ap.add_argument("--arch", help="an architecture for both instead of train-tiny's default (each keeps its own "
                    "recipe), e.g. to measure bn")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    import torch

    print(f"# CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; seeds {args.seeds}"
          + (f"; cnnfilter --arch {args.arch}" if args.arch else ""))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"shapes": (generate("shapes", tmp / "shapes", 1000, 0), generate("shapes", tmp / "shapes_t", 400, 100), 1),
                "textures": (generate("textures", tmp / "tex", 800, 0), generate("textures", tmp / "tex_t", 320, 100), 3),
                "digits": (*digits_split(tmp / "digits"), 1)}
        results = {}
        for name, (train, test, channels) in sets.items():
            if args.only and name != args.only:
                continue
            for seed in args.seeds:
                model = tmp / f"{name}-{seed}.cnnf"
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "cnnfilter", "train-tiny", str(train), "-o", str(model), "--seed",
                                str(seed), "--channels", str(channels), "-q",
                                *(["--arch", args.arch] if args.arch else [])], check=True)
                ours = (held_out(model, test, channels), time.perf_counter() - t)
                theirs = pytorch_run(train, test, seed, channels, args.arch)
                results[name, seed] = (ours, theirs)
                print(f"  {name:9s} seed {seed}  cnnfilter {100 * ours[0]:6.2f} % {ours[1]:6.1f} s   "
                      f"pytorch {100 * theirs[0]:6.2f} % {theirs[1]:6.1f} s", flush=True)
            mine = [results[name, s][0][0] for s in args.seeds]
            torch_acc = [results[name, s][1][0] for s in args.seeds]
            wall = max(results[name, s][0][1] for s in args.seeds)
            print(f"  {name:9s} mean      cnnfilter {100 * np.mean(mine):6.2f} %  (min {100 * min(mine):.2f})   "
                  f"pytorch {100 * np.mean(torch_acc):6.2f} %   ratio {np.mean(mine) / np.mean(torch_acc):5.3f}   "
                  f"slowest cnnfilter run {wall:.1f} s")
        if "shapes" in {n for n, _ in results}:
            mine = np.mean([results["shapes", s][0][0] for s in args.seeds])
            theirs = np.mean([results["shapes", s][1][0] for s in args.seeds])
            print(f"  target shapes >= 95 % and >= PyTorch's: {100 * mine:.2f} % vs {100 * theirs:.2f} % "
                  f"{'PASS' if mine >= 0.95 and mine >= theirs else 'FAIL'}")
        if ("digits", 0) in results:
            acc = results["digits", 0][0][0]
            print(f"  target digits seed 0 >= 98.5 %: {100 * acc:.2f} % {'PASS' if acc >= 0.985 else 'FAIL'}")
        slowest = max(v[0][1] for v in results.values())
        print(f"  target every cnnfilter run <= 60 s: slowest {slowest:.1f} s {'PASS' if slowest <= 60 else 'FAIL'}")


if __name__ == "__main__":
    main()
