"""What a model is, whatever file it came from: a network with its class names and input normalisation
(:class:`Model`), and the error every model loader raises (:class:`ModelError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class ModelError(ValueError):
    """A model file that is missing, truncated, tampered with, of another version, or not a model at all."""


def loader_failure(path):
    """A model loader's ``fail(why)``: raises ModelError naming ``path``."""
    from ..limits import printable

    name = printable(str(path))

    def fail(why: str):
        raise ModelError(f"cannot load model {name!r}: {why}")

    return fail


def open_model(path, fail):
    """``path`` opened for binary reading, only if it is a regular file; every way that fails is ``fail(why)``."""
    from ..limits import LimitError, open_regular

    try:
        return open_regular(path, "model")
    except FileNotFoundError:
        fail("no such file")
    except IsADirectoryError:
        fail("it is a directory")
    except PermissionError:
        fail("permission denied")
    except LimitError:
        fail("not a regular file (a pipe, device or socket)")
    except OSError as exc:
        fail(exc.strerror or str(exc))


class GraphError(ValueError):
    """A graph that cannot run: an unsupported operator, a cycle, a missing tensor, a bad attribute."""


class Node(NamedTuple):
    """One operator application (ONNX's model of a node). ``inputs`` may hold ``""`` for an omitted optional
    input."""

    name: str
    op: str
    inputs: tuple
    outputs: tuple
    attrs: dict


def toposort(nodes: list[Node], known: set) -> list[Node]:
    """Nodes in an order where every input is made before it is read (Kahn's algorithm, stable); refuses a
    cycle, a tensor made twice and an input nobody makes."""
    made = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if o and (o in made or o in known):
                msg = f"tensor {o!r} is made twice (node {n.name!r})"
                raise GraphError(msg)
            if o:
                made[o] = i
    waiting = []
    readers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        deps = set()
        for t in n.inputs:
            if not t or t in known:
                continue
            if t not in made:
                msg = f"node {n.name!r} ({n.op}) reads {t!r}, which no node makes and the file does not hold"
                raise GraphError(msg)
            deps.add(made[t])
        waiting.append(len(deps))
        for d in deps:
            readers.setdefault(d, []).append(i)
    import heapq

    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for r in readers.get(i, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(nodes):
        stuck = next(n for i, n in enumerate(nodes) if waiting[i] > 0)
        msg = f"the graph is not acyclic: node {stuck.name!r} ({stuck.op}) depends on its own output"
        raise GraphError(msg)
    return order



class Listing:
    """What the CLI lists of any network (a trained ``Network``, an imported ``Graph``), from its ``names``,
    ``layers`` (each with ``params()``), ``shapes`` and ``params()``."""

    def count(self) -> int:
        return int(sum(p.size for p in self.params()))

    def summary(self) -> list[tuple[str, str, tuple, int]]:
        """``(name, layer description, output shape, parameter count)`` per layer."""
        return [(n, repr(lay), s, int(sum(p.size for p in lay.params())))
                for n, lay, s in zip(self.names, self.layers, self.shapes)]


@dataclass
class Model:
    """A trained network with what is needed to feed it: class names and input normalisation."""

    net: object  # a Network (train-tiny's) or a Graph (an ONNX file's)
    classes: list[str]
    mean: np.ndarray  # (C,) in 0..1 pixel units
    std: np.ndarray  # (C,)
    meta: dict = field(default_factory=dict)  # training metadata
    channels: str = "rgb"  # the order the network takes colour channels in: rgb, or bgr (OpenCV-trained models)
    # an ONNX model whose height and width are symbolic, loaded without an input size: each image runs at its own
    # size (the net is built at 224x224 for listing its layers; for_size gives it at any other)
    free_size: bool = False
    _sized: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.net.input_shape

    def for_size(self, height: int, width: int) -> Model:
        """This model for images of ``height x width``: itself, unless it is a ``free_size`` model, whose network is
        then made at that size (the last few sizes are kept)."""
        if not self.free_size or (height, width) == tuple(self.net.input_shape[1:]):
            return self
        key = (int(height), int(width))
        if key not in self._sized:
            if len(self._sized) >= 4:
                self._sized.pop(next(iter(self._sized)))
            from dataclasses import replace

            self._sized[key] = replace(self, net=self.net.at_size(*key), _sized={})
        return self._sized[key]

    @property
    def output_name(self) -> str:
        """The layer (or ONNX tensor) whose values are the class scores."""
        return getattr(self.net, "output", None) or self.net.names[-1]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per channel, for ``x (N, C, H, W)`` in 0..1 (RGB), in the network's channel
        order."""
        if self.channels == "bgr" and x.shape[1] == 3:
            x = x[:, ::-1]
        return ((x - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)).astype(np.float32)

    def to_probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The network's output for a batch as ``(N, classes)`` probabilities: softmax of the scores, unless the
        network ends with its own softmax (or sigmoid, a multi-label classifier's). A model without classes (its
        output is a map) raises ValueError."""
        from .layers import softmax

        if not self.classes:
            msg = "the model's output is not one vector of class scores per image: featuremaps draws it"
            raise ValueError(msg)
        flat = scores.reshape(len(scores), -1).astype(np.float32, copy=False) if scores.ndim else scores
        if flat.ndim != 2 or flat.shape[1] != len(self.classes):
            msg = (f"the model's output has shape {scores.shape}; {len(self.classes)} class scores per image were "
                   "expected")
            raise ValueError(msg)
        return flat if getattr(self.net, "gives_probabilities", False) else softmax(flat)

    def batch_size(self, most: int = 256) -> int:
        """How many images to run at once: at most ``most``, and as many as the memory limit holds, counting four
        copies of each (the decoded input, the batch, its normalised copy, the forward pass)."""
        from ..limits import max_memory

        return max(1, min(most, max_memory() // max(4 * self.net.image_bytes, 1)))

    def probabilities(self, x: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, classes)`` for images ``x (N, C, H, W)`` in 0..1, :meth:`batch_size` at a
        time unless ``batch`` says. A ``free_size`` model runs at ``x``'s own height and width
        (:meth:`for_size`)."""
        x = np.asarray(x)
        if self.free_size and x.ndim == 4 and tuple(x.shape[2:]) != tuple(self.input_shape[1:]):
            return self.for_size(*x.shape[2:]).probabilities(x, batch)
        batch = batch or self.batch_size()
        out = []
        for i in range(0, len(x), batch):
            part = self.to_probabilities(self.net.forward(self.normalize(x[i : i + batch])))
            if len(part) != len(x[i : i + batch]):  # a graph that mixes the images of a batch
                msg = f"the model gave {len(part)} results for {len(x[i : i + batch])} images"
                raise ValueError(msg)
            out.append(part)
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)
