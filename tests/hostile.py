"""A corpus of hostile inputs and careless command lines, built small: bombs declare large sizes, they are not large.

``CASES`` is a list of :class:`Case`. Each builds its files in a fresh folder (``setup(root)``), runs one
``cnnfilter`` command there, and says what must hold: the exit code, a fragment of the one-line message, the most
memory and time it may take, and which folders may gain files. ``tests/test_hostile.py`` runs them all in
subprocesses; ``python tests/hostile.py`` runs them and prints a table (exit code, peak memory, time).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "samples" / "digits" / "3" / "0003.png"


@dataclass
class Case:
    name: str
    setup: Callable[[Path], None]
    args: list[str]  # after "cnnfilter"; run with cwd = the case's folder
    code: int  # expected exit code
    says: str = ""  # a fragment of stderr
    lines: int | None = 1  # lines on stderr (None: any)
    max_mb: int = 600  # peak resident memory of the process
    max_s: float = 30.0
    writes: tuple[str, ...] = ("out",)  # folders (relative) where new files may appear; "." for the case folder
    files: int | None = None  # how many files appear there (None: any)
    stdin: str | None = None  # a file (relative) or a device to use as standard input
    stdout: str | None = None  # a device for standard output (default: a pipe)
    env: dict = field(default_factory=dict)
    shell: bool = False  # args[0] is a shell command line (for closed descriptors)


def _img(path: Path, shape=(32, 32), seed=0, **save) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(path, **save)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _png16(path: Path, colour: int = 2, size=(2, 2), extra: bytes = b"", zeros: bool = False) -> None:
    """A 16-bit PNG (colour type 2 RGB, 6 RGBA, 4 grey + alpha) with optional extra chunks before IDAT; random
    pixels, or zeros (a small file for a large image)."""
    w, h = size
    channels = {2: 3, 4: 2, 6: 4}[colour]
    rng = np.random.default_rng(1)
    if zeros:
        rows = bytes(h * (1 + 2 * w * channels))
    else:
        rows = b"".join(b"\0" + rng.integers(0, 65536, (w * channels,), np.uint16).astype(">u2").tobytes()
                        for _ in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)) + extra
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    path.write_bytes(data)


def _zeros_deflated(n: int) -> bytes:
    c = zlib.compressobj(9)
    block = bytes(1 << 20)
    out = [c.compress(block) for _ in range(n >> 20)]
    return b"".join(out) + c.flush()


def _iccp_bomb(root: Path) -> None:
    _png16(root / "in.png", extra=_chunk(b"iCCP", b"icc\0\0" + _zeros_deflated(512 << 20)))


def _model(root: Path, name: str = "m.cnnf", *, header: dict | None = None, arrays: dict | None = None,
           raw_header: bytes | None = None, members: dict | None = None) -> None:
    """A model file written by hand: ``header`` fields over the bundled model's, ``arrays`` as .npy members."""
    with zipfile.ZipFile(ROOT / "samples" / "models" / "digits.cnnf") as zf:
        base = json.loads(zf.read("header.json"))
        params = {n[:-4]: np.load(io.BytesIO(zf.read(n))) for n in zf.namelist() if n.endswith(".npy")}
    base.update(header or {})
    params.update(arrays or {})
    with zipfile.ZipFile(root / name, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("header.json", raw_header if raw_header is not None else json.dumps(base))
        for n, a in params.items():
            if a is None:
                continue
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            zf.writestr(f"{n}.npy", buf.getvalue())
        for n, data in (members or {}).items():
            zf.writestr(n, data)


def _graph(arch: str, attrs: dict | None = None, **change) -> dict:
    """A version 2 header's graph for ``arch``, with ``change`` applied to every node's fields and ``attrs`` to
    every node's attributes that has them."""
    from cnnfilter.nn.arch import chain, parse

    nodes = [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs), "attrs": n.attrs}
             for n in chain(parse(arch))]
    for d in nodes:
        d.update(change)
        d["attrs"].update({k: v for k, v in (attrs or {}).items() if k in d["attrs"]})
    return {"version": 2, "graph": {"input": "input", "output": nodes[-1]["name"], "nodes": nodes}}


def _model_weight_bomb(root: Path) -> None:
    """A weight member whose stored size is small and whose inflated size is 512 MiB."""
    _model(root, arrays={"conv1.weight": None})
    path = root / "m.cnnf"
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("conv1.weight.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                    "shape": (32, 1, 3, 3)})
        with zf.open(info, "w", force_zip64=True) as fh:
            fh.write(head.getvalue())
            block = bytes(1 << 20)
            for _ in range(512):
                fh.write(block)


def _model_space_header(root: Path) -> None:
    _model(root, raw_header=b"{" + b" " * (64 << 20) + b'"format": "cnnfilter-model"}')


def _encrypted(root: Path) -> None:
    _model(root)
    data = bytearray((root / "m.cnnf").read_bytes())
    # set the 'encrypted' flag bit of every local and central header
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        while pos >= 0:
            data[pos + off] |= 1
            pos = data.find(sig, pos + 4)
    (root / "m.cnnf").write_bytes(bytes(data))


def _png_dpi(path: Path, per_metre: int) -> None:
    """An 8-bit PNG whose pHYs chunk declares ``per_metre`` pixels per metre (0 or 4e9: nonsense to copy)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    phys = _chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
    path.write_bytes(data[:33] + phys + data[33:])


def _forged_count(root: Path) -> None:
    """A model with 100,000 extra empty members whose end record claims 5: zipfile would read them all."""
    _model(root, members={f"{i}": b"" for i in range(100_000)})
    data = bytearray((root / "m.cnnf").read_bytes())
    pos = data.rfind(b"PK\x05\x06")
    data[pos + 8 : pos + 12] = struct.pack("<HH", 5, 5)
    (root / "m.cnnf").write_bytes(bytes(data))


def _png_chunk(path: Path, kind: bytes, body: bytes) -> None:
    """An 8-bit PNG with one extra chunk after IHDR."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    path.write_bytes(data[:33] + _chunk(kind, body) + data[33:])


def _scan_bomb_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="JPEG", progressive=True)
    data = buf.getvalue()
    last, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:end] + data[last:end] * 5000 + data[end:]


def _scan_bomb(path: Path) -> None:
    """A small progressive JPEG whose last scan is repeated 5,000 times (each scan re-decodes the whole image)."""
    path.write_bytes(_scan_bomb_bytes())


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's marker segments up to its first scan, as (marker, bytes); the scan and the rest last."""
    i, out = 2, []
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xDA:
            out.append((marker, data[i:]))
            break
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, data[i : i + 2 + length]))
        i += 2 + length
    return out


def _baseline_scan_bomb(path: Path) -> None:
    """A baseline (SOF0) colour JPEG whose first scan covers one component, repeated 5,000 times: libjpeg reads
    every one, each a pass over that component (Pillow does not call it progressive)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG", subsampling=0)
    head = b"".join(d for m, d in _segments(buf.getvalue()) if m != 0xDA)

    def scan(component: int, tables: int) -> bytes:  # one component, DC and AC tables, spectral 0..63
        return b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([component, tables, 0, 63, 0])

    path.write_bytes(b"\xff\xd8" + head + scan(1, 0x00) * 5000 + scan(2, 0x11) + scan(3, 0x11) + b"\xff\xd9")


def _jpeg_with_a_sparse_tail(path: Path) -> None:
    """A 64x64 JPEG followed by 256 MiB of zeros (a sparse file: nothing on disk): its scans are counted a chunk at
    a time, so memory stays small (reading it whole took twice the file's size)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue())
    os.truncate(path, 256 << 20)


def _mpo_scan_bomb(path: Path) -> None:
    """The progressive scan bomb with an APP2 'MPF' segment claiming two images: Pillow opens it as MPO."""
    data = _scan_bomb_bytes()
    entries = 8 + 2 + 3 * 12 + 4
    ifd = (struct.pack(">H", 3) + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100") + struct.pack(">HHII", 0xB001, 4, 1, 2)
           + struct.pack(">HHII", 0xB002, 7, 32, entries) + struct.pack(">I", 0))
    body = (b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">IIIHH", 0x20030000, len(data), 0, 0, 0)
            + struct.pack(">IIIHH", 0, 16, 0, 0, 0))
    app2 = b"\xff\xe2" + struct.pack(">H", 2 + 4 + len(body)) + b"MPF\x00" + body
    path.write_bytes(data[:2] + app2 + data[2:])


def _add_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, data)


def _folder(root: Path, n: int = 4) -> None:
    (root / "in").mkdir()
    for i in range(n):
        _img(root / "in" / f"{i}.png", seed=i)


def _fifo_in_folder(root: Path) -> None:
    _folder(root)
    os.mkfifo(root / "in" / "pipe.png")


def _loops(root: Path) -> None:
    _folder(root, 3)
    (root / "in" / "sub").mkdir()
    _img(root / "in" / "sub" / "s.png")
    os.symlink("..", root / "in" / "sub" / "up")
    os.symlink("../..", root / "in" / "sub" / "up2")
    os.symlink("loop.png", root / "in" / "loop.png")


def _victim(root: Path) -> None:
    (root / "in" / "a").mkdir(parents=True)
    (root / "victim").mkdir()
    _img(root / "victim" / "v.png")
    _img(root / "victim" / "v.edge.png", seed=5)


def _dots(root: Path) -> None:
    (root / "in").mkdir()
    (root / "work").mkdir()
    (root / "in" / "...png").write_bytes(DIGIT.read_bytes())
    (root / "in" / "..png").write_bytes(DIGIT.read_bytes())


def _newline(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "bad\nfailed: forged.png").write_bytes(b"not an image")
    _img(root / "in" / "ok.png")


def _digits(root: Path) -> None:
    import shutil

    for c in ("0", "1"):
        (root / "data" / c).mkdir(parents=True)
        for i, p in enumerate(sorted((ROOT / "samples" / "digits" / c).glob("*.png"))[:6]):
            shutil.copy(p, root / "data" / c / f"{i}.png")


def _with(*steps):
    def setup(root: Path) -> None:
        for step in steps:
            step(root)
    return setup


def _photo(root: Path) -> None:
    _img(root / "photo.png", (40, 40, 3))


def _tif(root: Path) -> None:
    _img(root / "photo.tif", (40, 40))


def _write(name: str, data) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(data):
            data(p)
        elif isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
    return setup


def _npy_header(shape, descr="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _corrupt_exif(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    app1 = b"Exif\0\0" + b"II*\0\x08\0\0\0" + b"\xff\xff" + b"\0" * 8  # claims 65535 entries
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])


C = ["convolve", "photo.png", "-o", "out/x.png"]

def _onnx(name: str, edit=None, *, pad=None, nodes=None) -> Callable[[Path], None]:
    """A small ONNX classifier (Conv-Relu-GlobalAveragePool-Flatten-Gemm on 1x8x8 images), changed by ``edit``
    (a function of the ModelProto), written to ``name``; onnx is imported only when the case is built."""
    def make(root: Path) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
                 numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "fc")]
        graph_nodes = nodes or [
            helper.make_node("Conv", ["input", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
            helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
            helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1)]
        graph = helper.make_graph(graph_nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                    ["N", 1, 8, 8])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        if edit is not None:
            edit(m, helper)
        (root / name).write_bytes(m.SerializeToString())
        _img(root / "d.png", (8, 8))

    return make


def _external(m, helper) -> None:
    from onnx import TensorProto

    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    del t.float_data[:]
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")


def _terabyte(m, helper) -> None:
    t = m.graph.initializer[1]
    t.ClearField("raw_data")
    del t.float_data[:]
    del t.dims[:]
    t.dims.extend([1 << 20, 1 << 20])


def _cycle(m, helper) -> None:
    m.graph.node[0].input[0] = "relu"


def _escaping_names(m, helper) -> None:
    for n in m.graph.node:
        for i, t in enumerate(n.input):
            n.input[i] = {"conv": "../../escape", "relu": "/abs/relu", "gap": "index"}.get(t, t)
        for i, t in enumerate(n.output):
            n.output[i] = {"conv": "../../escape", "relu": "/abs/relu", "gap": "index"}.get(t, t)


def _onnx_graph(make_nodes) -> Callable:
    def edit(m, helper):
        del m.graph.node[:]
        m.graph.node.extend(make_nodes(helper))
    return edit


def _broadcast_bomb(helper):
    """x + x^T squares the size each time: 64 -> 64x64 -> 4096x4096 -> 16M x 16M elements."""
    nodes, t = [], "input"
    for i in range(4):
        nodes += [helper.make_node("Reshape", [t, "flat_shape"], [f"r{i}"]),
                  helper.make_node("Transpose", [f"r{i}"], [f"t{i}"], perm=[1, 0]),
                  helper.make_node("Add", [f"r{i}", f"t{i}"], [f"a{i}"])]
        t = f"a{i}"
    return nodes + [helper.make_node("Gemm", [t, "fc"], ["logits"], transB=1)]


def _pad_bomb(helper):
    return [helper.make_node("Pad", ["input", "pads"], ["p"], mode="constant"),
            helper.make_node("GlobalAveragePool", ["p"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]


def _sparse_rows_pool(m, helper) -> None:
    """A MaxPool one row tall and 8192 wide every 512 rows of a 1024x16384 input: its windows read 2 rows, so the
    work limit lets it through (a second and a half in all); a pooling that swept every row would take 40 s or
    more."""
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 1024, 16384
    del m.graph.node[:]
    m.graph.node.extend([
        helper.make_node("MaxPool", ["input"], ["pool"], kernel_shape=[1, 8192], strides=[512, 1]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc1"], ["logits"], transB=1)])


def _with_init(edit, name, value):
    def both(m, helper):
        from onnx import numpy_helper

        m.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        edit(m, helper)
    return both


CASES: list[Case] = [
    # data loss: every file written goes through one policy
    Case("raw-is-the-input", _tif, ["convolve", "photo.tif", "-k", "edge", "-o", "out.png", "--raw", "photo.tif"],
         2, "is an input of this command", writes=()),
    Case("raw-is-the-output", _tif, ["convolve", "photo.tif", "-k", "edge", "-o", "o.tif", "--raw", "o.tif"],
         2, "is also the output image", writes=()),
    Case("raw-exists", _with(_tif, _write("r.npy", b"keep")),
         ["convolve", "photo.tif", "-k", "edge", "-o", "o.png", "--raw", "r.npy"], 1, "exists; use --overwrite",
         writes=()),
    Case("plot-is-the-model", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--plot", "m.cnnf", "--epochs", "1"],
         2, "is also the model", writes=()),
    Case("plot-is-a-training-image", _digits,
         ["train-tiny", "data", "-o", "m.cnnf", "--plot", "data/1/0.png", "--epochs", "1", "--overwrite"],
         2, "is an input of this command", writes=()),
    Case("log-is-another-model", _with(_digits, _write("other.cnnf", b"keep")),
         ["train-tiny", "data", "-o", "m.cnnf", "--log", "other.cnnf", "--epochs", "1"], 1, "exists; use --overwrite",
         writes=()),
    Case("output-is-the-kernel-file", _with(_photo, _write("k.txt", "0 1 0\n1 -4 1\n0 1 0\n")),
         ["convolve", "photo.png", "-k", "k.txt", "-o", "k.txt", "-f", "png", "--overwrite"], 2,
         "is an input of this command", writes=()),
    Case("raw-is-the-kernel-file", _with(_photo, _write("k.npy", lambda p: np.save(p, np.full((3, 3), 1 / 9)))),
         ["convolve", "photo.png", "-k", "k.npy", "-o", "out/x.png", "--raw", "k.npy", "--overwrite"], 2,
         "--raw 'k.npy' is an input of this command"),
    Case("output-is-a-fifo", _with(_photo, lambda r: os.mkfifo(r / "p.png")),
         ["convolve", "photo.png", "-k", "edge", "-o", "p.png", "--overwrite"], 1, "is not a regular file",
         max_s=10, writes=()),
    Case("featuremaps-input-in-its-report", lambda r: (r / "fm" / "input").mkdir(parents=True) or
         (r / "fm" / "input" / "input.png").write_bytes(DIGIT.read_bytes()),
         ["featuremaps", "fm/input/input.png", "-o", "fm", "--overwrite"], 1, "holds an input", lines=1, writes=()),
    Case("name-format-spec", _folder, ["convolve", "in", "-k", "edge", "-o", "out", "--name", "{stem:>2000000000}.png"],
         2, "has a format or conversion", max_s=10),
    Case("name-longer-than-255", _photo, ["convolve", "photo.png", "-k", "edge", "-o", "out/",
                                          "--suffix", "x" * 300], 2, "longer than 255 bytes", max_s=10),
    Case("recursive-dotdot-pattern", _loops, ["convolve", "in/**/../sub/*.png", "-r", "-k", "edge", "-o", "out"], 1,
         "'..' in a recursive pattern is not supported", lines=2, max_s=10),
    Case("output-is-a-symlink-loop", _with(_photo, lambda r: os.symlink("l2", r / "l1") or os.symlink("l1", r / "l2")),
         ["convolve", "photo.png", "-k", "edge", "-o", "l1"], 1, "a symbolic link loop", writes=()),
    Case("model-class-with-newline", lambda r: _model(r, header={"classes": ["zero\nforged: line", *map(str, range(1, 10))]}),
         ["predict", "m.cnnf", str(DIGIT), "-q"], 1, "control characters", writes=()),
    Case("model-arch-5000-digits", lambda r: _model(r, header={"arch": "c" + "9" * 5000 + "k3-fc10"}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "the architecture does not build", writes=()),
    Case("model-graph-billion-filters", lambda r: _model(r, header=_graph("c999999999k3-fc10")),
         ["predict", "m.cnnf", str(DIGIT)], 1, "over the limit", max_mb=200, max_s=10, writes=()),
    Case("model-graph-node-named-a-path", lambda r: _model(r, header=_graph("c4k3-fc10", name="../../x")),
         ["predict", "m.cnnf", str(DIGIT)], 1, "is not a name of 1 to 64 printable characters", writes=()),
    Case("model-graph-padding-of-a-billion", lambda r: _model(r, header=_graph("c32k3p1-relu-max2-c64k3p1-relu-max2-fc10",
                                                                          {"pads": [999_999_999] * 4})),
         ["predict", "m.cnnf", str(DIGIT)], 1, "leaves a window with no pixel", max_mb=200, max_s=10, writes=()),
    Case("arch-padding-of-a-billion", _digits,
         ["train-tiny", "data", "-o", "m.cnnf", "--arch", "c4k1p999999999-max3s1p1", "--epochs", "1"], 2,
         "over the limit", max_mb=300, max_s=20, writes=()),
    Case("model-graph-cycle", lambda r: _model(r, header=_graph("c4k3-fc10", inputs=["fc1"])),
         ["predict", "m.cnnf", str(DIGIT)], 1, "not acyclic", writes=()),
    Case("model-many-members", lambda r: _model(r, members={f"x{i}": b"" for i in range(70_000)}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "declares 65,535 members", max_mb=200, max_s=10, writes=()),
    Case("seed-negative", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--seed", "-1"], 2, "--seed", writes=()),
    Case("model-slow-pooling", lambda r: _model(r, header={"arch": "max400s1-max400-fc10", "input_shape": [1, 1024, 1024],
                                                          "mean": [0.5], "std": [0.25]},
                                                arrays={n: None for n in ("conv1.weight", "conv1.bias", "conv2.weight",
                                                                          "conv2.bias", "fc1.weight", "fc1.bias")}
                                                | {"fc1.weight": np.zeros((10, 1), np.float32),
                                                   "fc1.bias": np.zeros(10, np.float32)}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "over the work limit", max_s=10, writes=()),
    Case("featuremaps-100000-channels", lambda r: _model(r, header={"arch": "c100000k1-fc2", "input_shape": [1, 1, 1],
                                                                   "classes": ["a", "b"], "mean": [0.5], "std": [0.25]},
                                                         arrays={"conv1.weight": np.zeros((100000, 1, 1, 1), np.float32),
                                                                 "conv1.bias": np.zeros(100000, np.float32),
                                                                 "conv2.weight": None, "conv2.bias": None,
                                                                 "fc1.weight": np.zeros((2, 100000), np.float32),
                                                                 "fc1.bias": np.zeros(2, np.float32)}),
         ["featuremaps", str(DIGIT), "-m", "m.cnnf", "-o", "out", "-q"], 0, lines=0, max_mb=800, max_s=30),
    Case("featuremaps-link-out-of-the-report", lambda r: (r / "maps" / "0003").mkdir(parents=True) or
         (r / "victim").mkdir() or os.symlink("../../victim", r / "maps" / "0003" / "channels"),
         ["featuremaps", str(DIGIT), "-m", "digits", "-o", "maps", "--separate", "--overwrite"], 1,
         "channels', a link, pipe or device; remove it", lines=1, writes=("maps",)),
    Case("kernel-file-8-million-rows", _with(_photo, _write("k.txt", b"1\n" * 8_000_000)), [*C, "-k", "k.txt"], 2,
         "larger than 255x255", max_mb=200, max_s=10),
    Case("png16-decode-over-max-memory", lambda r: _png16(r / "big.png", 6, (4000, 4000), zeros=True),
         ["convolve", "big.png", "-k", "box", "-o", "out/x.png", "--max-memory", "100MiB"], 1,
         "decoding a 4000x4000 image needs about", max_mb=250, max_s=20),
    Case("png-dpi-4e9-to-bmp", _write("d.png", lambda p: _png_dpi(p, 0xFFFFFFFF)),
         ["convolve", "d.png", "-k", "box", "-o", "out/x.bmp", "-q"], 0, lines=0),
    Case("png-dpi-0-to-pdf", _write("d.png", lambda p: _png_dpi(p, 0)),
         ["convolve", "d.png", "-k", "box", "-o", "out/x.pdf", "-q"], 0, lines=0),
    Case("stdout-is-the-input", _photo, ["cnnfilter convolve photo.png -k edge -o - 1<>photo.png"], 2,
         "standard output is the input", shell=True, writes=()),
    Case("stdin-is-the-output", _photo, ["cnnfilter convolve - -k edge -o photo.png --overwrite < photo.png"], 2,
         "is the file on standard input", shell=True, writes=()),
    Case("predict-stdout-closed", lambda r: None, [f"cnnfilter predict digits {DIGIT} >&-"], 1,
         "standard output is closed", shell=True, writes=()),
    Case("lr-1e308", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--lr", "1e308"], 2, "--lr", writes=()),
    Case("featuremaps-non-utf8-name", lambda r: (r / os.fsdecode(b"e\xe9.png")).write_bytes(DIGIT.read_bytes()),
         ["featuremaps", os.fsdecode(b"e\xe9.png"), "-m", "digits", "-o", "out", "-q"], 0, lines=0),
    Case("model-member-declares-1e12", lambda r: _model(r, arrays={"fc1.bias": None}) or _add_member(
         r / "m.cnnf", "fc1.bias.npy", _npy_header((10**12,), "<f4")),
         ["predict", "m.cnnf", str(DIGIT)], 1, "has shape (1000000000000,)", writes=()),
    Case("format-apng", _photo, [*C[:3], "out/x.apng", "-k", "box", "-f", "apng", "-q"], 0, lines=0),
    Case("predict-batch-within-max-memory", lambda r: _model(r, header={
             "arch": "max64-fc2", "input_shape": [3, 4096, 4096], "classes": ["a", "b"], "mean": [0.5] * 3,
             "std": [0.2] * 3}, arrays={"conv1.weight": None, "conv1.bias": None, "conv2.weight": None,
                                       "conv2.bias": None, "fc1.weight": np.zeros((2, 3 * 64 * 64), np.float32),
                                       "fc1.bias": np.zeros(2, np.float32)}),
         ["predict", "m.cnnf", str(DIGIT), str(DIGIT), str(DIGIT), "-q"], 0, lines=0, max_mb=1100, max_s=60,
         env={"CNNFILTER_MAX_MEMORY": "1GiB"}, writes=()),
    Case("model-forged-member-count", _forged_count, ["predict", "m.cnnf", str(DIGIT)], 1,
         "the archive's directory is", max_mb=200, max_s=10, writes=()),
    Case("model-two-channels", lambda r: _model(r, header={"input_shape": [2, 8, 8], "mean": [0.5, 0.5],
                                                           "std": [0.2, 0.2]}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "the header has input shape (2, 8, 8)", writes=()),
    Case("stdout-appends-to-the-kernel", _with(_photo, _write("k.txt", "0 1 0\n1 -4 1\n0 1 0\n")),
         ["cnnfilter convolve photo.png -k k.txt -o - >> k.txt"], 2, "standard output is the input 'k.txt'",
         shell=True, writes=()),
    Case("stdin-and-stdout-one-file", _photo, ["cnnfilter convolve - -k edge -o - < photo.png >> photo.png"], 2,
         "standard output is the file on standard input", shell=True, writes=()),
    Case("raw-is-the-file-on-stdin", _tif,
         ["cnnfilter convolve - -k edge -o out/x.png --raw photo.tif --overwrite < photo.tif"], 2,
         "output 'photo.tif' is the file on standard input", shell=True),
    Case("featuremaps-bank-kernel-in-its-report", _with(_write("maps/d/k.txt", "0 1 0\n1 -4 1\n0 1 0\n"),
                                                        _write("d.png", DIGIT.read_bytes())),
         ["featuremaps", "d.png", "--kernels", "maps/d/k.txt,edge", "-o", "maps", "--overwrite"], 1,
         "holds an input", lines=1, writes=()),
    Case("featuremaps-fifo-in-its-report", _with(_write("d.png", DIGIT.read_bytes()),
                                                 lambda r: (r / "maps" / "d").mkdir(parents=True)
                                                 or os.mkfifo(r / "maps" / "d" / "index.html")),
         ["featuremaps", "d.png", "-m", "digits", "-o", "maps", "--overwrite"], 1, "a link, pipe or device",
         lines=1, max_s=10, writes=()),
    Case("featuremaps-file-in-a-report-place", _with(_write("in/a.png", DIGIT.read_bytes()),
                                                     _write("in/b.png", DIGIT.read_bytes()), _write("maps/a", "x")),
         ["featuremaps", "in", "-m", "digits", "-o", "maps", "-q"], 1, "a file is in its place", lines=2,
         writes=("maps/b", "maps/index.html"), files=12),
    Case("featuremaps-250-layers", lambda r: _model(r, header={"arch": "c1024k1-" + "relu-" * 250 + "fc10"},
                                                    arrays={"conv1.weight": np.zeros((1024, 1, 1, 1), np.float32),
                                                            "conv1.bias": np.zeros(1024, np.float32),
                                                            "conv2.weight": None, "conv2.bias": None,
                                                            "fc1.weight": np.zeros((10, 1024 * 64), np.float32)}),
         ["featuremaps", str(DIGIT), "-m", "m.cnnf", "-o", "out", "-q"], 1, "at most 16,384 tiles", lines=1,
         max_s=15),
    Case("png-with-broken-exif", _write("b.png", lambda p: _png_chunk(p, b"eXIf", b"XX\0*\0\0\0\x08\0\0")),
         ["convolve", "b.png", "-k", "box", "-o", "out/x.png", "-q"], 0, "unreadable EXIF ignored"),
    Case("predict-broken-exif", _write("b.png", lambda p: _png_chunk(p, b"eXIf", b"XX\0*\0\0\0\x08\0\0")),
         ["predict", "digits", "b.png", str(DIGIT), "-q"], 0, lines=0, writes=()),
    Case("jpeg-scan-bomb", _write("s.jpg", _scan_bomb), ["convolve", "s.jpg", "-k", "edge", "-o", "out/x.png"], 1,
         "a JPEG of at least 5,00", max_s=10),
    Case("jpeg-baseline-scan-bomb", _write("s.jpg", _baseline_scan_bomb),
         ["convolve", "s.jpg", "-k", "edge", "-o", "out/x.png"], 1, "a JPEG of at least 5,00", max_s=10),
    Case("jpeg-scan-bomb-as-mpo", _write("s.jpg", _mpo_scan_bomb),
         ["convolve", "s.jpg", "-k", "edge", "-o", "out/x.png"], 1, "a JPEG of at least 5,00", max_s=10),
    Case("jpeg-with-a-256-mib-tail", _write("t.jpg", _jpeg_with_a_sparse_tail),
         ["convolve", "t.jpg", "-k", "edge", "-o", "out/x.png"], 0, "wrote", max_mb=300, max_s=20),
    Case("jpeg-scan-bomb-on-stdin", _write("s.jpg", _mpo_scan_bomb), ["convolve", "-", "-k", "edge", "-o", "x.png"],
         1, "a JPEG of at least 5,00", max_s=10, stdin="s.jpg"),
    Case("predict-2000-classes", lambda r: _model(r, header={"arch": "fc2000", "input_shape": [1, 1, 1],
                                                             "classes": [f"c{i}" for i in range(2000)],
                                                             "mean": [0.5], "std": [0.25]},
                                                  arrays={n: None for n in ("conv1.weight", "conv1.bias", "conv2.weight",
                                                                            "conv2.bias")}
                                                  | {"fc1.weight": np.zeros((2000, 1), np.float32),
                                                     "fc1.bias": np.zeros(2000, np.float32)})
         or _write("d/c7/x.png", DIGIT.read_bytes())(r),
         ["predict", "m.cnnf", "d"], 0, "resized to 1x1", lines=1, max_mb=300, max_s=15, writes=()),
    Case("class-name-with-markup", _with(lambda r: _model(r, header={"classes": ["[/]", "[link=https://e.x/]b",
                                                                            *map(str, range(2, 10))]}),
                                         _write("d/2/x.png", DIGIT.read_bytes())),
         ["predict", "m.cnnf", "d"], 0, lines=0, writes=()),
    Case("stride-2-to-the-70", _photo, [*C, "-k", "box", "--stride", str(2**70)], 2, "is larger than"),
    Case("glob-bad-range", _folder, ["convolve", "in/**/[z-a].png", "-r", "-k", "edge", "-o", "out"], 1,
         "is not a valid pattern", lines=2),
    Case("predict-nan-pixels", _write("n.tif", lambda p: Image.fromarray(
        np.where(np.eye(8, dtype=bool), np.nan, 0.5).astype(np.float32)).save(p)),
         ["predict", "digits", "n.tif"], 1, "not finite", lines=1, writes=()),
    Case("format-that-holds-no-images", _photo, [*C[:3], "out/x.bufr", "-k", "box", "-f", "bufr"], 2,
         "cannot hold greyscale or RGB images"),
    Case("bias-nan", _photo, [*C, "-k", "box", "--bias", "nan"], 2, "must be a finite number"),
    Case("in-place-through-a-link", _with(lambda r: (r / "d").mkdir() or (r / "outside").mkdir(),
                                          lambda r: _img(r / "outside" / "v.png"),
                                          lambda r: os.symlink("../outside/v.png", r / "d" / "link.png")),
         ["convolve", "d", "-k", "box", "--in-place", "-j", "1"], 1, "is a symbolic link", lines=2, writes=()),
    Case("in-place-animated-gif", _write("a.gif", lambda p: Image.new("L", (8, 8)).save(
        p, save_all=True, append_images=[Image.new("L", (8, 8), 255)] * 3)),
         ["convolve", "a.gif", "-k", "box", "--in-place"], 1, "frames and only the first is filtered", writes=()),
    # escapes
    Case("featuremaps-dot-stems", _dots, ["featuremaps", "in/...png", "in/..png", "-m", "digits", "-o", "work/maps",
                                          "-q"], 0, lines=0, writes=("work/maps",), files=23),
    Case("glob-through-dotdot", _victim, ["convolve", "in/*/../../victim/*.png", "-k", "edge", "-o", "out/",
                                          "--overwrite", "-q", "-j", "1"], 0, lines=0, files=1),
    Case("newline-in-a-name", _newline, ["convolve", "in", "-k", "edge", "-o", "out", "-j", "1"], 1,
         "'in/bad\\nfailed: forged.png'", lines=2),
    # memory and time, whatever a file claims
    Case("png16-iccp-bomb", _iccp_bomb, ["convolve", "in.png", "-k", "box", "-o", "out/x.png", "-q"], 0, lines=0,
         max_mb=400),
    Case("model-weight-bomb", _model_weight_bomb, ["predict", "m.cnnf", str(DIGIT)], 1, "weight.npy' declares 512 MiB",
         max_mb=400, writes=()),
    Case("model-header-of-spaces", _model_space_header, ["predict", "m.cnnf", str(DIGIT)], 1,
         "'header.json' declares 64 MiB", max_mb=400, writes=()),
    Case("model-million-filters", lambda r: _model(r, header={"arch": "c1000000k3p1-fc10"}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "over the limit of 50,000,000", max_mb=400, writes=()),
    Case("model-huge-activations", lambda r: _model(r, header={"arch": "c3000k255-fc10", "input_shape": [1, 4096, 4096],
                                                               "mean": [0.5], "std": [0.2]}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "the architecture does not build", max_mb=400, writes=()),
    Case("model-encrypted", _encrypted, ["predict", "m.cnnf", str(DIGIT)], 1, "is encrypted", writes=()),
    Case("model-infinity-in-header", lambda r: _model(r, raw_header=b'{"format": "cnnfilter-model", "version": 1, '
                                                     b'"arch": "fc10", "input_shape": [1, Infinity, 8]}'),
         ["predict", "m.cnnf", str(DIGIT)], 1, "the header is unreadable", writes=()),
    Case("model-float64-1e300", lambda r: _model(r, arrays={"fc1.bias": np.full(10, 1e300)}),
         ["predict", "m.cnnf", str(DIGIT)], 1, "beyond float32's range", writes=()),
    Case("model-is-a-fifo", lambda r: os.mkfifo(r / "m.cnnf"), ["predict", "m.cnnf", str(DIGIT)], 1,
         "not a regular file", max_s=10, writes=()),
    Case("model-is-dev-zero", lambda r: None, ["predict", "/dev/zero", str(DIGIT)], 1, "not a regular file",
         max_s=10, writes=()),
    Case("stdin-is-dev-zero", lambda r: None, ["convolve", "-", "-k", "edge", "-o", "out/x.png"], 1,
         "standard input is larger than 8 MiB", stdin="/dev/zero", env={"CNNFILTER_MAX_STDIN": "8MiB"}, max_mb=200,
         max_s=10),
    Case("image-is-a-fifo", lambda r: os.mkfifo(r / "p.png"), ["convolve", "p.png", "-k", "edge", "-o", "out/x.png"],
         1, "not a regular file", max_s=10),
    Case("fifo-in-a-folder", _fifo_in_folder, ["convolve", "in", "-k", "edge", "-o", "out", "-j", "1"], 1,
         "not a regular file", lines=2, max_s=20),
    Case("fifo-in-predict", _fifo_in_folder, ["predict", "digits", "in/pipe.png", "in/0.png"], 1,
         "not a regular file", lines=3, max_s=10, writes=()),  # and the warning that 0.png is resized
    Case("kernel-is-a-fifo", _with(_photo, lambda r: os.mkfifo(r / "k.txt")), [*C, "-k", "k.txt"], 2,
         "not a regular file", max_s=10),
    Case("kernel-file-too-big", _with(_photo, _write("k.txt", b"1 " * (9 << 20))), [*C, "-k", "k.txt"], 2,
         "larger than 16 MiB", max_mb=300, max_s=10),
    Case("padding-20000", _photo, [*C, "-k", "edge", "--padding", "20000"], 2, "over the memory limit",
         env={"CNNFILTER_MAX_MEMORY": "2GiB"}, max_s=10),
    Case("dilation-10000", _photo, [*C, "-k", "gaussian", "--size", "255", "--dilation", "10000"], 2,
         "over the memory limit", max_s=10),
    Case("pool-window-40000", _photo, ["pool", "photo.png", "--size", "40000", "--stride", "1", "--padding", "20000",
                                       "-o", "out/x.png"], 2, "over the", env={"CNNFILTER_MAX_MEMORY": "2GiB"},
         max_s=10),
    Case("jobs-100000", _folder, ["convolve", "in", "-k", "edge", "-o", "out", "-j", "100000"], 0,
         "using 8", lines=2, max_s=60),
    Case("arch-10000-layers", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--arch", "-".join(["relu"] * 10000)], 2,
         "at most 256", max_s=10, writes=()),
    Case("train-tiny-too-big", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--size", "4000", "--max-memory",
                                         "64MiB"], 1, "over --max-memory", max_s=20, writes=()),
    Case("train-tiny-max-pixels", _digits, ["train-tiny", "data", "-o", "m.cnnf", "--max-pixels", "50", "-q"], 1,
         "(12 skipped; the first, 'data/0/0.png': more pixels than the decompression-bomb limit (50",
         writes=()),
    Case("recursive-glob-loops", _loops, ["convolve", "in/**/*.png", "-r", "-k", "edge", "-o", "out", "-j", "1"],
         0, "4 done", max_s=30, files=4),
    # faults: one bad entry is that entry's failure
    Case("symlink-loop-in-a-folder", _loops, ["convolve", "in", "-k", "edge", "-o", "out", "-j", "1"], 1,
         "loop.png': a symbolic link loop", lines=2, files=3),
    Case("long-input-name", _with(lambda r: (r / "in").mkdir(),
                                  lambda r: _img(r / "in" / ("n" * 246 + ".png"))),
         ["convolve", "in", "-k", "edge", "-o", "out", "--suffix", "", "-q", "-j", "1"], 0, lines=0),
    Case("name-too-long", _photo, ["convolve", "photo.png", "-k", "edge", "-o", "out/" + "n" * 300 + ".png"], 1,
         "too long"),
    Case("stdout-is-dev-full", _photo, ["convolve", "photo.png", "-k", "edge", "-o", "-"], 1,
         "cannot write '-' (standard output): No space left on device", stdout="/dev/full", writes=()),
    Case("stdin-closed", lambda r: None, ["cnnfilter convolve - -k edge -o out/x.png <&-"], 1,
         "standard input is closed", shell=True),
    Case("stdout-closed", _photo, ["cnnfilter convolve photo.png -k edge -o - >&-"], 1, "standard output is closed",
         shell=True, writes=()),
    Case("json-kernel-deep", _with(_photo, _write("k.json", "[" * 100_000 + "]" * 100_000)), [*C, "-k", "k.json"], 2,
         "nested too deeply"),
    Case("json-kernel-400-digits", _with(_photo, _write("k.json", "[[" + "9" * 400 + "]]")), [*C, "-k", "k.json"], 2,
         "int too large to convert to float"),
    Case("npy-kernel-declares-1e9", _with(_photo, _write("k.npy", _npy_header((10**9, 10**9)))), [*C, "-k", "k.npy"],
         2, "has shape (1000000000, 1000000000)"),
    Case("npy-kernel-complex", _with(_photo, _write("k.npy", lambda p: np.save(p, np.ones((3, 3), complex)))),
         [*C, "-k", "k.npy"], 2, "complex values"),
    Case("kernel-above-float32", _with(_photo, _write("k.txt", "1e39 0\n0 1")), [*C, "-k", "k.txt"], 2,
         "beyond float32's range"),
    Case("sigma-1e308", _photo, [*C, "-k", "gaussian", "--sigma", "1e308"], 2, "far wider than the largest"),
    Case("motion-angle-nan", _photo, [*C, "-k", "motion", "--angle", "nan"], 2, "must be a finite number"),
    Case("scale-1e308", _photo, [*C, "-k", "sharpen", "--scale", "1e308"], 2, "NaN or infinite"),
    Case("corrupt-exif", _write("e.jpg", _corrupt_exif), ["convolve", "e.jpg", "-k", "box", "-o", "out/x.png", "-q"],
         0, "cnnfilter: warning: 'e.jpg': Corrupt EXIF data", lines=1),
    Case("predict-png16-rgb", lambda r: _png16(r / "a.png", 2, (8, 8)), ["predict", "digits", "a.png", "-q"], 0,
         lines=0, writes=()),
    Case("featuremaps-png16-rgba", lambda r: _png16(r / "a.png", 6, (8, 8)),
         ["featuremaps", "a.png", "-m", "digits", "-o", "out", "-q"], 0, lines=0),
    Case("featuremaps-png16-la", lambda r: _png16(r / "a.png", 4, (8, 8)),
         ["featuremaps", "a.png", "-o", "out", "-q"], 0, lines=0),
    # ONNX models: data, never instructions (no file named inside is read, no name chooses where a file goes)
    Case("onnx-external-data", _onnx("m.onnx", _external), ["predict", "m.onnx", "d.png"], 1,
         "stored outside the model file", writes=()),
    Case("onnx-declares-a-terabyte", _onnx("m.onnx", _terabyte), ["predict", "m.onnx", "d.png"], 1,
         "over the memory limit", writes=()),
    Case("onnx-truncated", lambda r: (_onnx("full.onnx")(r), (r / "m.onnx").write_bytes(
        (r / "full.onnx").read_bytes()[:200])), ["predict", "m.onnx", "d.png"], 1, "not an ONNX model", writes=()),
    Case("onnx-cycle", _onnx("m.onnx", _cycle), ["featuremaps", "d.png", "-m", "m.onnx", "-o", "out"], 1,
         "not acyclic"),
    Case("onnx-unsupported-operator", _onnx("m.onnx", lambda m, h: setattr(m.graph.node[1], "op_type", "Upsample")),
         ["predict", "m.onnx", "d.png"], 1, "'Upsample' (node 'relu') is not supported", writes=()),
    Case("onnx-names-escape", _onnx("m.onnx", _escaping_names),
         ["featuremaps", "d.png", "-m", "m.onnx", "-o", "out", "-q"], 0, lines=0),
    Case("onnx-pool-stride-past-rows", _onnx("m.onnx", _with_init(_sparse_rows_pool, "fc1",
                                                                  np.ones((10, 1), np.float32))),
         ["predict", "m.onnx", "d.png", "-q"], 0, "", lines=None, max_s=15, writes=()),
    Case("onnx-broadcast-bomb", _onnx("m.onnx", _with_init(_onnx_graph(_broadcast_bomb), "flat_shape",
                                                           np.array([-1, 1], np.int64))),
         ["predict", "m.onnx", "d.png"], 1, "over the memory limit", writes=()),
    Case("onnx-pad-bomb", _onnx("m.onnx", _with_init(_onnx_graph(_pad_bomb), "pads",
                                                     np.array([0, 0, 10**6, 10**6, 0, 0, 10**6, 10**6], np.int64))),
         ["predict", "m.onnx", "d.png"], 1, "over the memory limit", writes=()),
]


def prepare(case: Case, root: Path) -> None:
    """The case's files, and an empty ``out`` folder (the usual -o target)."""
    (root / "out").mkdir()
    case.setup(root)


# Runs the command as its only child and writes the peak resident memory of its children (the command, and the
# processes the command itself waited for: workers, a shell's child) in KiB to the file named first.
_WRAP = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_case(case: Case, root: Path) -> tuple[int, str, float, float]:
    """Run ``case`` in ``root`` (already set up): ``(exit code, stderr, peak MiB, seconds)``."""
    import subprocess
    import tempfile
    import time

    env = {**os.environ, **case.env, "COLUMNS": "200"}
    cmd = (["bash", "-c", case.args[0].replace("cnnfilter", f"{sys.executable} -m cnnfilter", 1)] if case.shell
           else [sys.executable, "-m", "cnnfilter", *case.args])
    stdin = open(case.stdin if case.stdin.startswith("/") else root / case.stdin, "rb") if case.stdin else subprocess.DEVNULL
    stdout = open(case.stdout, "wb") if case.stdout else subprocess.PIPE
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _WRAP, rss.name, *cmd], cwd=root, env=env, stdin=stdin,
                                stdout=stdout, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=case.max_s * 4)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        seconds = time.monotonic() - start
        text = Path(rss.name).read_text().strip()
    for f in (stdin, stdout):
        if hasattr(f, "close"):
            f.close()
    return proc.returncode, err.decode("utf-8", "replace"), (int(text) / 1024 if text else float("nan")), seconds


if __name__ == "__main__":
    import tempfile

    print(f"{'case':32s} {'exit':>4s} {'MiB':>6s} {'s':>6s}  stderr")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            prepare(case, root)
            code, err, mb, sec = run_case(case, root)
            first = err.strip().splitlines()[0] if err.strip() else ""
            print(f"{case.name:32s} {code:4d} {mb:6.0f} {sec:6.2f}  {first[:110]}")
