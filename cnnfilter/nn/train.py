"""Training: mini-batch gradient descent yielding progress events (the CLI renders them; library code never prints)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .arch import Network
from .data import affine_batch, shift_batch
from .layers import BatchNorm, cross_entropy
from .optim import DEFAULT_LR, OPTIMIZERS

SCHEDULES = ("constant", "cosine")


@dataclass
class BatchEvent:
    """After each mini-batch: the running mean loss of the epoch so far."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    samples: int
    loss: float
    samples_per_s: float


@dataclass
class EpochEvent:
    """After each epoch: training loss/accuracy (running, over the epoch), validation loss/accuracy (None without
    validation data), wall time, and whether this is the best epoch so far (by validation accuracy, else loss)."""

    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    seconds: float
    best: bool


def evaluate(net: Network, x: np.ndarray, y: np.ndarray, batch: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on ``(x, y)`` (inference mode)."""
    total, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = net.forward(x[i : i + batch])
        loss, _, _ = cross_entropy(logits, y[i : i + batch])
        total += loss * len(logits)
        correct += int((logits.argmax(axis=1) == y[i : i + batch]).sum())
    return total / max(len(x), 1), correct / max(len(x), 1)


class Trainer:
    """Trains ``net`` on standardised ``(x, y)``; ``run()`` yields :class:`BatchEvent` and :class:`EpochEvent`.

    All randomness (shuffling, augmentation, dropout is the network's own) comes from
    ``np.random.default_rng(seed)``. ``best_params`` holds a copy of the best epoch's parameters.
    """

    def __init__(self, net: Network, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
                 y_val: np.ndarray | None = None, *, epochs: int = 30, batch_size: int = 32,
                 optimizer: str = "adam", lr: float | None = None, momentum: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0, augment: str | None = None, fill: np.ndarray | None = None,
                 schedule: str = "constant", label_smoothing: float = 0.0, patience: int | None = None):
        self.net, self.x, self.y = net, x, y
        self.x_val, self.y_val = x_val, y_val
        self.epochs, self.batch_size = epochs, batch_size
        lr = DEFAULT_LR[optimizer] if lr is None else lr
        kwargs = {"momentum": momentum} if optimizer == "sgd" else {}
        self.optimizer = OPTIMIZERS[optimizer](net.params(), lr=lr, weight_decay=weight_decay, **kwargs)
        self.rng = np.random.default_rng(seed)
        self.augment = augment
        if schedule not in SCHEDULES:
            msg = f"schedule {schedule!r} is not one of {', '.join(SCHEDULES)}"
            raise ValueError(msg)
        self.schedule, self.base_lr = schedule, lr
        self.label_smoothing, self.patience = label_smoothing, patience
        self.stopped_early = False
        self.fill = np.zeros(x.shape[1], x.dtype) if fill is None else np.asarray(fill, x.dtype)
        self.best_params: list[np.ndarray] | None = None
        self.best_epoch = 0
        self.best_score = -np.inf
        self.history: list[EpochEvent] = []

    def run(self):
        n = len(self.x)
        batches = -(-n // self.batch_size)
        if batches > 1 and n % self.batch_size == 1 and any(isinstance(la, BatchNorm) for la in self.net.layers):
            batches -= 1  # a last batch of one sample teaches a BatchNorm nothing; each epoch leaves out another
        max_shift = max(1, round(0.1 * min(self.x.shape[2:])))
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            if self.schedule == "cosine":  # from the base rate at the first epoch towards 0 after the last
                self.optimizer.lr = self.base_lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / self.epochs))
            order = self.rng.permutation(n)
            total, correct, seen = 0.0, 0, 0
            for b in range(batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
                if self.augment == "shift":
                    xb = shift_batch(xb, self.rng, self.fill, max_shift)
                elif self.augment in ("affine", "affine-flip"):
                    xb = affine_batch(xb, self.rng, self.fill, flip=self.augment == "affine-flip")
                logits = self.net.forward(xb, train=True)
                loss, _, grad = cross_entropy(logits, yb, self.label_smoothing)
                self.net.backward(grad)
                self.optimizer.step(self.net.grads())
                total += loss * len(idx)
                correct += int((logits.argmax(axis=1) == yb).sum())
                seen += len(idx)
                elapsed = time.perf_counter() - start
                yield BatchEvent(epoch, self.epochs, b + 1, batches, seen, total / seen, seen / max(elapsed, 1e-9))
            if not np.isfinite(total):
                msg = f"the loss became {total} in epoch {epoch}: lower --lr"
                raise FloatingPointError(msg)
            val_loss = val_acc = None
            if self.x_val is not None and len(self.x_val):
                val_loss, val_acc = evaluate(self.net, self.x_val, self.y_val)
            score = val_acc if val_acc is not None else -total / seen
            best = score > self.best_score
            if best:
                self.best_score, self.best_epoch = score, epoch
                self.best_params = [p.copy() for p in self.net.state()]  # running statistics too
            event = EpochEvent(epoch, self.epochs, total / seen, correct / seen, val_loss, val_acc,
                               time.perf_counter() - start, best)
            self.history.append(event)
            yield event
            if self.patience is not None and epoch - self.best_epoch >= self.patience:
                self.stopped_early = True  # no better epoch for `patience` epochs
                return

    def restore_best(self) -> None:
        """Put the best epoch's parameters back into the network."""
        if self.best_params is not None:
            for p, best in zip(self.net.state(), self.best_params):
                p[...] = best


def train(net: Network, x, y, x_val=None, y_val=None, **options):
    """Train ``net`` in place, yielding :class:`BatchEvent` / :class:`EpochEvent` (see :class:`Trainer`)."""
    yield from Trainer(net, x, y, x_val, y_val, **options).run()


@dataclass
class Prepared:
    """A dataset ready to train on: standardised float32 arrays, class names, the normalisation used."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    skipped: list
    total: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x.shape[1:])

    @property
    def fill(self) -> np.ndarray:
        """The standardised value of black, per channel (what a shifted image is padded with)."""
        return (-self.mean / self.std).astype(np.float32)


def _permute(x: np.ndarray, order: np.ndarray) -> None:
    """``x[:] = x[order]`` in place, one sample of extra memory (cycle by cycle)."""
    done = np.zeros(len(order), bool)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        keep = x[start].copy()
        j = start
        while True:
            done[j] = True
            k = order[j]
            if k == start:
                x[j] = keep
                break
            x[j] = x[k]
            j = k


def _channel_stats(x: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``x (N, C, H, W)`` in float64, ``chunk`` samples at a time (numpy's
    ``std`` would make a float64 copy of the whole dataset), chunks combined as Chan et al.'s parallel variance."""
    C = x.shape[1]
    count, mean, m2 = 0, np.zeros(C), np.zeros(C)
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].astype(np.float64)
        n = b.shape[0] * b.shape[2] * b.shape[3]
        bm = b.mean(axis=(0, 2, 3))
        bm2 = ((b - bm.reshape(1, -1, 1, 1)) ** 2).sum(axis=(0, 2, 3))
        delta = bm - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + bm2 + delta**2 * (count * n / total)
        count = total
    return mean.astype(np.float32), np.sqrt(m2 / max(count, 1)).astype(np.float32)


def prepare(data, *, channels: int = 1, size: tuple[int, int] | None = None, val_split: float = 0.2,
            val=None, seed: int = 0, max_memory: int = 2 << 30) -> Prepared:
    """Load ``data`` (ImageFolder layout), split off a stratified ``val_split`` (seeded) unless ``val`` (another
    folder) is given, and standardise both with the training set's per-channel mean and std."""
    from .data import DataError, load_folder, split

    ds = load_folder(data, channels=channels, size=size, max_memory=max_memory)
    skipped = list(ds.skipped)
    if val is not None:
        vs = load_folder(val, channels=channels, size=tuple(ds.x.shape[2:]), max_memory=max_memory)
        if vs.classes != ds.classes:
            msg = f"--val classes {vs.classes} differ from the training classes {ds.classes}"
            raise DataError(msg)
        skipped += vs.skipped
        x, y, xv, yv = ds.x, ds.y, vs.x, vs.y
    elif val_split > 0:
        tr, va = split(ds.y, val_split, np.random.default_rng(seed))
        _permute(ds.x, np.concatenate([tr, va]))  # in place: the dataset is never held twice
        x, y, xv, yv = ds.x[: len(tr)], ds.y[tr], ds.x[len(tr):], ds.y[va]
    else:
        x, y, xv, yv = ds.x, ds.y, None, None
    mean, std = _channel_stats(x)
    std[std < 1e-6] = 1.0  # a constant channel: leave its scale alone

    def norm(a):
        a -= mean.reshape(1, -1, 1, 1)
        a /= std.reshape(1, -1, 1, 1)
        return a

    x = norm(np.ascontiguousarray(x))
    xv = None if xv is None else norm(np.ascontiguousarray(xv))
    return Prepared(x, y, xv, yv, ds.classes, mean, std, skipped, len(ds.y) + (0 if val is None else len(yv)))
