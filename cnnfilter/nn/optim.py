"""Optimisers: SGD (momentum, weight decay) and Adam, updating parameters in place."""

from __future__ import annotations

import numpy as np


class SGD:
    """``v = momentum * v + (g + weight_decay * p)``; ``p -= lr * v`` (PyTorch's SGD)."""

    def __init__(self, params: list[np.ndarray], lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0):
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.velocity = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        for p, g, v in zip(self.params, grads, self.velocity):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v *= self.momentum
                v += g
                g = v
            p -= self.lr * g

    def __repr__(self):
        return f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g})"


class Adam:
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is added to the gradient (PyTorch's Adam)."""

    def __init__(self, params: list[np.ndarray], lr: float = 0.002, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params, self.lr, self.betas, self.eps, self.weight_decay = params, lr, betas, eps, weight_decay
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1 = 1 - b1**self.t
        c2 = 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if self.weight_decay:
                g = g + self.weight_decay * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def __repr__(self):
        return f"Adam(lr={self.lr:g}, betas={self.betas}, weight_decay={self.weight_decay:g})"


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
DEFAULT_LR = {"sgd": 0.05, "adam": 0.002}
