"""Resource limits: every bound cnnfilter puts on what an input or an option can make it do, in one place.

ImageMagick answers hostile input with ``policy.xml`` (memory, width, height, area, time); Pillow with its
decompression-bomb limit. cnnfilter checks declared sizes and estimates before it allocates or starts work, and
refuses with the estimate in the message. Each limit is read at call time: the command-line options
(``--max-memory``, ``--max-pixels``) and the environment variables named below change them.

=========================  ===============================  =======================================================
limit                      default                          raised by
=========================  ===============================  =======================================================
memory of one operation    half the RAM (per worker: / -j)  ``--max-memory SIZE``, ``CNNFILTER_MAX_MEMORY``
work of one filter/pool    1e11 multiply-adds (a pooling    ``CNNFILTER_MAX_WORK``
                           read counts as 20)
standard input             256 MiB                          ``CNNFILTER_MAX_STDIN``
kernel file                16 MiB                           ``CNNFILTER_MAX_KERNEL_FILE``
model header / entry       header 1 MiB; entries as         (fixed: the header declares every size)
                           declared by the header
network                    256 layers, 50 M parameters     ``CNNFILTER_MAX_PARAMS``
worker processes           4 x the cores                    (fixed)
=========================  ===============================  =======================================================
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

MEMORY_FRACTION = 0.5
DEFAULT_MAX_WORK = 1e11
# A pooling window read costs about 20 multiply-adds of a direct filter (measured on a 4096² plane, 15x15, AMD EPYC:
# 0.46 G reads/s against 8.8 G multiply-adds/s), so the work budget counts it as 20.
POOL_READ_COST = 20
DEFAULT_MAX_STDIN = 256 << 20
DEFAULT_MAX_KERNEL_FILE = 16 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_LAYERS = 256
DEFAULT_MAX_PARAMS = 50_000_000
JOBS_PER_CORE = 4
MAX_JPEG_SCANS = 1000  # progressive JPEGs have about 10; each scan re-decodes the image

_memory: int | None = None  # set for the duration of a command by ``memory_limit``


class LimitError(ValueError):
    """A request over one of the limits above; the message gives the estimate, the limit and how to raise it."""


def physical_memory() -> int:
    """Bytes of RAM (8 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 8 << 30


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return parse_bytes(text)
    except ValueError:
        return default


def max_memory() -> int:
    """The memory one operation may use: ``--max-memory`` when a command set it, else ``CNNFILTER_MAX_MEMORY``,
    else half the RAM."""
    if _memory is not None:
        return _memory
    return _env_bytes("CNNFILTER_MAX_MEMORY", int(physical_memory() * MEMORY_FRACTION))


@contextlib.contextmanager
def memory_limit(nbytes: int | None):
    """``max_memory()`` is ``nbytes`` for the duration (None: leave it)."""
    global _memory
    old = _memory
    if nbytes is not None:
        _memory = int(nbytes)
    try:
        yield
    finally:
        _memory = old


def set_memory_limit(nbytes: int | None) -> None:
    """For a worker process: ``max_memory()`` is ``nbytes`` from now on."""
    global _memory
    _memory = None if nbytes is None else int(nbytes)


def max_work() -> float:
    text = os.environ.get("CNNFILTER_MAX_WORK")
    try:
        return float(text) if text else DEFAULT_MAX_WORK
    except ValueError:
        return DEFAULT_MAX_WORK


def max_stdin() -> int:
    return _env_bytes("CNNFILTER_MAX_STDIN", DEFAULT_MAX_STDIN)


def max_kernel_file() -> int:
    return _env_bytes("CNNFILTER_MAX_KERNEL_FILE", DEFAULT_MAX_KERNEL_FILE)


def max_params() -> int:
    text = os.environ.get("CNNFILTER_MAX_PARAMS")
    try:
        return int(float(text)) if text else DEFAULT_MAX_PARAMS
    except ValueError:
        return DEFAULT_MAX_PARAMS


def max_jobs() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return JOBS_PER_CORE * max(1, cores)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.I)


def parse_bytes(text: str) -> int:
    """``"512MiB"``, ``"2G"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (K, M, G, T are powers of 1024)."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        msg = f"{text!r} is not a size such as 512MiB or 2GiB"
        raise ValueError(msg)
    return int(float(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower()))


def fmt_bytes(n: float) -> str:
    """``6.1 GiB``, ``512 MiB``, ``3 KiB``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(need: float, what: str) -> None:
    """Refuse ``what`` when it needs more than ``max_memory()`` bytes."""
    budget = max_memory()
    if need > budget:
        msg = f"{what} needs about {fmt_bytes(need)}, over the memory limit of {fmt_bytes(budget)} (--max-memory)"
        raise LimitError(msg)


def check_work(ops: float, what: str) -> None:
    """Refuse ``what`` when it needs more than ``max_work()`` elementary operations."""
    budget = max_work()
    if ops > budget:
        msg = (f"{what} needs about {ops:.3g} operations, over the work limit of {budget:.3g} "
               f"(CNNFILTER_MAX_WORK)")
        raise LimitError(msg)


def open_regular(path, what: str = "file"):
    """Open ``path`` for binary reading, refusing anything but a regular file: a FIFO, a device (``/dev/zero``) or
    a socket would hang or never end. Raises OSError (FileNotFoundError, ...) or LimitError."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            msg = f"cannot read {printable(str(path))!r}: not a regular file (a pipe, device or socket)"
            raise LimitError(msg)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(fh, cap: int, what: str) -> bytes:
    """All of ``fh``, refusing more than ``cap`` bytes (read at most ``cap + 1``)."""
    data = fh.read(cap + 1)
    if len(data) > cap:
        msg = f"{what} is larger than {fmt_bytes(cap)}"
        raise LimitError(msg)
    return data


def read_file(path, cap: int, what: str) -> bytes:
    """A regular file's bytes, at most ``cap``."""
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > cap:
            msg = f"{what} is {fmt_bytes(size)}, larger than {fmt_bytes(cap)}"
            raise LimitError(msg)
        return read_capped(fh, cap, what)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, escapes, C1 controls such as CSI, bidi
    overrides, the surrogates of a name that is not UTF-8) written as ``\\xNN`` or ``\\uNNNN``, as Python's
    ``repr`` does: a file or class name cannot forge a line of output or move the terminal's cursor."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                                              if ord(c) < 65536 else f"\\U{ord(c):08x}") for c in text)


def shorten(text: str, limit: int = 80) -> str:
    """At most ``limit`` characters of ``text`` (printable), with an ellipsis when cut."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
