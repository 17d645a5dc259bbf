"""The model file (``.cnnf``): a zip holding ``header.json`` and one ``.npy`` per parameter. Never pickle.

The header holds the format name and version, the network's graph (version 2: its nodes, each an operator, input
and output tensor names and attributes; version 1 files hold only the architecture string, and still load), the
architecture string it was built from, the input shape, the class names, the normalisation (per-channel mean and
std of the training set), every parameter's shape, and training metadata. Loading checks all of it against the
graph, and every value for finiteness.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..limits import MAX_HEADER_BYTES, fmt_bytes, printable
from .arch import ArchError, chain, check_size, network, parse, parts, plan
from .core import Model, ModelError, Node, loader_failure, open_model

FORMAT = "cnnfilter-model"
VERSION = 2  # version 1: no "graph", the network is its "arch" string
HEADER = "header.json"


def save_model(model: Model, path) -> None:
    """Write ``model`` to ``path`` atomically (a temporary file renamed over it)."""
    from ..io import atomic_file

    net = model.net
    names = net.state_names()  # parameters and running statistics
    header = {
        "format": FORMAT,
        "version": VERSION,
        "arch": net.arch,
        "graph": {"input": net.input, "output": net.output,
                  "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                             "attrs": n.attrs} for n in net.nodes]},
        "input_shape": list(net.input_shape),
        "classes": list(model.classes),
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "params": {n: list(p.shape) for n, p in zip(names, net.state())},
        "layers": [{"name": n, "layer": r, "output": list(s)} for n, r, s, _ in net.summary()],
        "training": model.meta,
    }
    with atomic_file(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(HEADER, json.dumps(header, indent=1))
        for name, p in zip(names, net.state()):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(p, np.float32), allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())


def load_model(path) -> Model:
    """Read a model written by :func:`save_model`, or an ONNX file (``.onnx``, :func:`~cnnfilter.nn.load_onnx`
    with its defaults); raises ModelError naming the problem.

    The file is data: only a regular file is opened, only stored or deflated zip members are read, each read
    with a cap (the header at most 1 MiB, each parameter the size its declared shape needs), and the network's
    size is checked against the limits before anything is allocated."""
    from .onnxfile import is_onnx

    if is_onnx(path):
        from .onnxfile import load_onnx

        return load_onnx(path)
    fail = loader_failure(path)
    fh = open_model(path, fail)
    with fh:
        directory = _directory(fh)
        if directory is not None and directory[0] > MAX_MEMBERS:
            fail(f"the archive declares {directory[0]:,} members; a model has at most {MAX_MEMBERS}")
        if directory is not None and directory[1] > MAX_DIRECTORY_BYTES:
            fail(f"the archive's directory is {fmt_bytes(directory[1])}; a model's is at most "
                 f"{fmt_bytes(MAX_DIRECTORY_BYTES)}")
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            fail("not a cnnfilter model (not a zip archive, or truncated)")
        with zf:
            return _load(zf, fail)


MAX_MEMBERS = 1024  # a model holds a header and two arrays per layer (at most 256 layers)
MAX_DIRECTORY_BYTES = 1 << 20  # 1024 entries of under 1 KiB each


def _directory(fh) -> tuple[int, int] | None:
    """``(members, central directory bytes)`` as the end-of-central-directory record declares them, read before
    zipfile parses the directory (which it sizes by the byte count: a million empty members would take
    gigabytes); a zip64 archive (0xFFFF / 0xFFFFFFFF) declares more than a model ever has. None if not found."""
    import os
    import struct

    size = os.fstat(fh.fileno()).st_size
    tail = min(size, 22 + 65535)
    fh.seek(size - tail)
    data = fh.read(tail)
    fh.seek(0)
    pos = data.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(data):
        return None
    count, nbytes = struct.unpack("<HI", data[pos + 10 : pos + 16])
    return count, nbytes


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, fail) -> bytes:
    """A member's bytes, refusing one that declares, or inflates to, more than ``cap``."""
    if info.file_size > cap:
        fail(f"member {info.filename!r} declares {fmt_bytes(info.file_size)}, more than the {fmt_bytes(cap)} "
             "it may hold")
    try:
        with zf.open(info) as fh:
            data = fh.read(cap + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        fail(f"member {info.filename!r} is unreadable ({printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})")
    if len(data) > cap:
        fail(f"member {info.filename!r} inflates to more than {fmt_bytes(cap)}")
    return data


def _no_constants(text: str):
    raise ValueError(f"{text} is not a number a model may hold")


def _load(zf: zipfile.ZipFile, fail) -> Model:
    infos = {}
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            fail(f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            fail(f"member {info.filename!r} uses zip compression method {info.compress_type}; only stored and "
                 "deflated members are read")
        infos[info.filename] = info
    if HEADER not in infos:
        fail(f"not a cnnfilter model (no {HEADER})")
    text = _member(zf, infos[HEADER], MAX_HEADER_BYTES, fail)
    try:
        header = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        fail("the header is nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"the header is unreadable ({printable(str(exc))[:80]})")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fail("not a cnnfilter model (wrong format name in the header)")
    version = header.get("version")
    if version not in (1, VERSION):
        fail(f"format version {version!r}, but this cnnfilter reads version {VERSION}; upgrade cnnfilter"
             if isinstance(version, int) and version > VERSION else f"unsupported format version {printable(repr(version))[:40]}")
    try:
        arch = str(header["arch"])
        shape = tuple(int(v) for v in header["input_shape"])
        classes = [str(c) for c in header["classes"]]
        if any(not c.isprintable() for c in classes):
            raise ValueError("a class name holds control characters")
        mean = np.asarray(header["mean"], np.float32)
        std = np.asarray(header["std"], np.float32)
        meta = dict(header.get("training") or {})
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        fail(f"the header is incomplete or malformed ({printable(str(exc))[:80]})")
    if (len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3) or shape[1] * shape[2] > 1 << 24 or not classes
            or len(classes) > 100_000):
        fail(f"the header has input shape {shape} and {len(classes)} classes")
    if mean.shape != (shape[0],) or std.shape != (shape[0],) or not (np.isfinite(mean).all()
                                                                  and np.isfinite(std).all() and (std > 0).all()):
        fail("the normalisation (mean/std) does not match the input channels or is not finite and positive")
    try:
        if version == 1:
            spec = parse(arch)
            if spec[-1][0] != "fc":
                spec.append(("fc", len(classes)))
            nodes, input_name, output = chain(spec), "input", None
        else:
            nodes, input_name, output = _graph(header.get("graph"), fail)
        layers = plan(nodes, shape, input_name)
        image_bytes = check_size(layers, shape)
    except ArchError as exc:
        fail(f"the {'architecture' if version == 1 else 'graph'} does not build: {exc}")
    if output is not None and output != layers[-1].name:
        fail(f"the graph's output {printable(repr(output))[:60]} is not its last node in topological order")
    if layers[-1].node.op != "Gemm" or layers[-1].shape != (len(classes),):
        fail(f"the network's last node must be a dense layer of {len(classes)} outputs, one per class")
    expected = {f"{layer.name}.{part}": p for layer in layers for part, p in zip(parts(layer.node.op), layer.params)}
    extra = set(infos) - {HEADER} - {f"{n}.npy" for n in expected}
    if extra:
        fail(f"unexpected member {printable(sorted(extra)[0])!r}")
    arrays = {}
    for pname, pshape in expected.items():  # every member checked and read before the network is built
        member = f"{pname}.npy"
        if member not in infos:
            fail(f"parameter {pname!r} is missing")
        cap = 8 * int(np.prod(pshape)) + 4096  # float64 at most, and the .npy header
        data = _member(zf, infos[member], cap, fail)
        try:
            fmt, buf = np.lib.format, io.BytesIO(data)
            version = fmt.read_magic(buf)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape_declared, _, dtype = read_header(buf, max_header_size=4096)
            if tuple(shape_declared) != tuple(pshape):  # before numpy allocates what the header declares
                fail(f"parameter {pname!r} has shape {tuple(shape_declared)}; the architecture needs {tuple(pshape)}")
            if dtype.kind != "f" or dtype.itemsize > 8:
                fail(f"parameter {pname!r} has dtype {dtype}; expected float")
            arr = fmt.read_array(io.BytesIO(data), allow_pickle=False, max_header_size=4096)
        except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
            if isinstance(exc, ModelError):
                raise
            fail(f"parameter {pname!r} is unreadable ({printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:80]})")
        if arr.shape != tuple(pshape):
            fail(f"parameter {pname!r} has shape {arr.shape}; the architecture needs {tuple(pshape)}")
        if arr.dtype.kind != "f":
            fail(f"parameter {pname!r} has dtype {arr.dtype}; expected float")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            fail(f"parameter {pname!r} holds NaN or infinite values, or values beyond float32's range")
        if pname.endswith(".running_var") and (arr < 0).any():
            fail(f"parameter {pname!r} holds a negative variance")
        arrays[pname] = arr
    net = network(layers, shape, arch=arch, image_bytes=image_bytes, input_name=input_name)
    for pname, p in zip(net.state_names(), net.state()):
        p[...] = arrays[pname]
    return Model(net, classes, mean, std, meta)


_NAME = 64  # characters of a node or tensor name


def _graph(graph, fail) -> tuple[list[Node], str, object]:
    """The nodes, input name and output of a version 2 header's ``graph``, each field checked for its type and size (the
    operators and attributes are checked by :func:`~cnnfilter.nn.arch.plan`)."""
    from ..limits import MAX_LAYERS

    def name(v, what):
        if not isinstance(v, str) or not v or len(v) > _NAME or not v.isprintable() or "/" in v or "\\" in v:
            fail(f"the graph's {what} {printable(repr(v))[:60]} is not a name of 1 to {_NAME} printable characters")
        return v

    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        fail("the header has no graph (version 2 holds one)")
    if len(graph["nodes"]) > MAX_LAYERS:
        fail(f"the graph has {len(graph['nodes']):,} nodes; at most {MAX_LAYERS} are allowed")
    nodes = []
    for d in graph["nodes"]:
        if not isinstance(d, dict) or not isinstance(d.get("inputs"), list) or not isinstance(d.get("outputs"), list) \
                or not isinstance(d.get("attrs", {}), dict) or len(d["inputs"]) > 2 or len(d["outputs"]) != 1:
            fail("a node of the graph is not {name, op, inputs (1 or 2), outputs (1), attrs}")
        node = Node(name(d.get("name"), "node name"), name(d.get("op"), "operator"),
                    tuple(name(t, "tensor name") for t in d["inputs"]), (name(d["outputs"][0], "tensor name"),),
                    dict(d.get("attrs", {})))
        if node.outputs[0] != node.name:
            fail(f"node {node.name!r} makes {node.outputs[0]!r}: a node's output bears its name")
        nodes.append(node)
    input_name = name(graph.get("input", "input"), "input name")
    if not nodes:
        fail("the graph has no nodes")
    return nodes, input_name, graph.get("output")


BUNDLED = ("digits",)


def resolve_model(spec) -> Path:
    """A model path, or the name of a bundled model (``digits``: the project's ``samples/models/digits.cnnf``,
    installed as the package data ``cnnfilter._models``)."""
    path = Path(spec)
    if str(spec) in BUNDLED and not path.exists():
        here = Path(__file__).resolve().parent.parent
        root = here / "_models"
        if not root.is_dir():  # an editable install: the checkout's samples/models
            root = here.parent / "samples" / "models"
        return root / f"{spec}.cnnf"
    return path


@dataclass(frozen=True)
class ModelSource:
    """How to open a model, as an object a batch's workers receive (each opens it once: :meth:`open` is cached per
    process). ``spec`` is MODEL as the commands take it (a ``.cnnf`` file, ``digits`` or an ``.onnx`` file); an ONNX
    model also takes its input size, normalisation (``mean``/``std`` in the network's channel order, or a preset
    name), channel order and class names (a cnnfilter model carries its own)."""

    spec: str
    input_size: tuple | None = None
    mean: tuple | str | None = None
    std: tuple | str | None = None
    channels: str | None = None
    classes: tuple | None = None

    def open(self) -> Model:
        return _opened(self)


@functools.lru_cache(maxsize=4)
def _opened(source: ModelSource) -> Model:
    from .onnxfile import is_onnx, load_onnx

    path = resolve_model(source.spec)
    if not is_onnx(path):
        return load_model(path)
    mdl = load_onnx(path, input_size=source.input_size, mean=source.mean, std=source.std,
                    classes=None if source.classes is None else list(source.classes))
    mdl.channels = source.channels or "rgb"
    return mdl
