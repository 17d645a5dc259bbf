"""Inputs -> jobs -> outputs: expanding folders and globs, naming outputs, running jobs in worker processes.

Memory stays bounded: inputs are streamed from the file system, at most ``2 * jobs`` files are in flight, and each
worker holds one image at a time. A bad file is reported and the batch goes on (unless ``fail_fast``); every event
is yielded to the caller (the CLI draws the progress bar and the summary from them). Nothing here prints.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

GLOB_CHARS = set("*?[")


@functools.cache
def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow can read (``.png``, ``.jpg``, ...), lower case (loads every Pillow plugin, once)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@dataclass(frozen=True)
class Source:
    """One input file and where it sits relative to the argument it came from (kept under ``-o DIR``)."""

    path: Path
    rel: Path


def iter_sources(args: Iterable[str], *, recursive: bool = False,
                 exclude: Path | None = None) -> Iterator[Source | Result]:
    """Stream the files named by ``args``: files as given, folders (their images; all levels with ``recursive``)
    and glob patterns (``**`` when ``recursive``). Files inside folders are filtered by image suffix and sorted per
    folder; a file named explicitly is always taken (a bad one is reported when read). An argument that names
    nothing yields a failed :class:`Result`. Files under ``exclude`` (the output folder) are never taken, so a
    batch writing inside its own input folder does not feed on its results."""
    skip = exclude.resolve() if exclude is not None else None
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            yield from _walk(p, recursive, image_suffixes(), skip)
        elif p.exists():
            yield Source(p, Path(p.name))
        elif GLOB_CHARS & set(arg):
            root = Path(_glob_root(arg))
            found = False
            for m in sorted(glob.iglob(arg, recursive=recursive)):
                mp = Path(m)
                if mp.is_file() and not _inside(mp, skip):
                    found = True
                    yield Source(mp, mp.relative_to(root) if mp.is_relative_to(root) else Path(mp.name))
            if not found:
                yield Result(p, None, "failed", f"no file matches {arg!r}")
        else:
            yield Result(p, None, "failed", f"cannot read {arg!r}: no such file or folder")


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (``photos/2024/*.png`` -> ``photos/2024``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _walk(root: Path, recursive: bool, suffixes: frozenset[str], skip: Path | None) -> Iterator[Source]:
    if _inside(root, skip):
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        dirs[:] = [] if not recursive else [d for d in dirs if not _inside(Path(folder) / d, skip)]
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                path = Path(folder) / name
                yield Source(path, path.relative_to(root))


TEMPLATE_FIELDS = ("stem", "name", "kernel", "ext")


def check_template(template: str) -> None:
    """Only the plain fields ``{stem}``, ``{name}``, ``{kernel}``, ``{ext}`` (no attributes, indexes or formats)."""
    import string

    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None or spec or conv]
    except ValueError as exc:
        msg = f"--name {template!r} is not a valid template: {exc}"
        raise ValueError(msg) from None
    bad = [f for f in fields if f not in TEMPLATE_FIELDS]
    if bad:
        msg = f"--name {template!r} is not a valid template (fields: {{stem}}, {{name}}, {{kernel}}, {{ext}}; not {bad[0]!r})"
        raise ValueError(msg)


def output_path(src: Source, *, out_dir: Path | None, template: str, label: str, ext: str) -> Path:
    """Where ``src``'s result goes: ``template`` (fields ``{stem}``, ``{name}``, ``{kernel}``, ``{ext}``) next to
    the input, or under ``out_dir`` at the input's relative path (``template`` checked by :func:`check_template`)."""
    try:
        name = template.format(stem=src.path.stem, name=src.path.name, kernel=label, ext=ext)
    except (KeyError, IndexError, ValueError) as exc:
        msg = f"--name {template!r} is not a valid template (fields: {{stem}}, {{name}}, {{kernel}}, {{ext}}): {exc}"
        raise ValueError(msg) from None
    if not name or "/" in name or name in (".", ".."):
        msg = f"--name {template!r} gives {name!r}, not a file name"
        raise ValueError(msg)
    folder = src.path.parent if out_dir is None else out_dir / src.rel.parent
    return folder / name


@dataclass(frozen=True)
class Result:
    """What became of one input: ``status`` is ``done``, ``skipped`` (output exists) or ``failed``."""

    source: Path
    target: Path | None
    status: str
    message: str = ""


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def plan(sources: Iterable[Source | Result], name_for: Callable[[Source], Path], *, overwrite: bool = False,
         skip_existing: bool = False, in_place: bool = False) -> Iterator[Job | Result]:
    """A :class:`Job` per source, or a :class:`Result` when it must not run: its output exists (``skipped`` with
    ``skip_existing``, else ``failed`` unless ``overwrite``) or is the input itself (unless ``in_place``)."""
    claimed: set[Path] = set()
    for src in sources:
        if isinstance(src, Result):
            yield src
            continue
        try:
            dst = src.path.resolve() if in_place else name_for(src)  # in place through a symlink: its target
        except ValueError as exc:  # --name gives no file name for this input (e.g. '{stem}' of '..png')
            yield Result(src.path, None, "failed", str(exc))
            continue
        key = dst.resolve()
        if key in claimed:
            yield Result(src.path, dst, "failed", f"another input already writes {str(dst)!r} (rename with --name)")
            continue
        claimed.add(key)
        if not in_place and dst.resolve() == src.path.resolve():
            yield Result(src.path, dst, "failed", "the output would overwrite the input; use --in-place to allow it")
        elif dst.exists() and not in_place and not overwrite:
            if skip_existing:
                yield Result(src.path, dst, "skipped", "output exists")
            else:
                yield Result(src.path, dst, "failed", f"{str(dst)!r} exists; use --overwrite or --skip-existing")
        else:
            yield Job(src.path, dst)


def run(items: Iterable[Job | Result], work: Callable[[Path, Path], None], *, processes: int = 1,
        fail_fast: bool = False, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[Result]:
    """Run ``work(source, target)`` for each :class:`Job` (a :class:`Result` passes straight through), yielding a
    :class:`Result` per input as it finishes.

    ``work`` raises to report a failure; its message becomes the result's. With ``processes > 1`` the work runs in
    that many worker processes (``work`` and ``initializer`` must be picklable), with at most ``2 * processes``
    jobs in flight, so memory holds a few images whatever the number of files. ``fail_fast`` stops after the
    first failure.
    """
    if processes <= 1:  # in this process: the caller sets any limits (see pixel_limit)
        for item in items:
            res = item if isinstance(item, Result) else _attempt(work, item.source, item.target)
            yield res
            if fail_fast and res.status == "failed":
                return
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    window = 2 * processes
    # fork is cheaper (no fresh interpreter, numpy and Pillow already imported) and safe while this process has
    # not loaded numba (whose thread pool a fork would inherit half-initialised); otherwise spawn.
    ctx = multiprocessing.get_context("fork" if "numba" not in sys.modules and sys.platform == "linux" else "spawn")
    from concurrent.futures.process import BrokenProcessPool

    def new_pool():
        return ProcessPoolExecutor(processes, mp_context=ctx, initializer=initializer, initargs=initargs)

    pool = new_pool()
    pending: dict = {}  # Future -> Job
    it = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                item = next(it, None)
                if item is None:
                    exhausted = True
                elif isinstance(item, Result):
                    yield item
                    if fail_fast and item.status == "failed":
                        exhausted = True
                else:
                    try:
                        fut = pool.submit(_attempt, work, item.source, item.target)
                    except BrokenProcessPool:  # a worker died earlier: start a fresh pool for the rest
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                        fut = pool.submit(_attempt, work, item.source, item.target)
                    pending[fut] = item
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            stop = False
            for fut in done:
                job = pending.pop(fut)
                res = _collect(fut, job)
                yield res
                stop = stop or (fail_fast and res.status == "failed")
            if stop:  # report what is already running, start nothing more
                for fut in list(pending):
                    if not fut.cancel():
                        yield _collect(fut, pending[fut])
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(fut, job: Job) -> Result:
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001 - the worker process died (killed, out of memory)
        return Result(job.source, job.target, "failed", f"worker process failed: {exc}")


def _attempt(work: Callable[[Path, Path], None], src: Path, dst: Path) -> Result:
    from .io import ImageReadError, ImageWriteError

    try:
        work(src, dst)
    except (ImageReadError, ImageWriteError, ValueError, TypeError) as exc:
        return Result(src, dst, "failed", str(exc))
    except OSError as exc:
        return Result(src, dst, "failed", f"{exc.strerror or exc}: {exc.filename or src}")
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch; the message says what it was
        return Result(src, dst, "failed", f"{type(exc).__name__}: {exc}")
    return Result(src, dst, "done")


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None):
    """Pillow's decompression-bomb limit set to ``max_pixels`` for the duration (None: leave it)."""
    old = Image.MAX_IMAGE_PIXELS
    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


@contextlib.contextmanager
def compiled_kernels():
    """Within a batch, small images use the compiled kernels too: loading numba once (~0.8 s) is repaid after a
    few files, and the compiled 3x3 loop is about 3x faster than the exact numpy path (same results)."""
    from . import filters

    old = filters.SMALL_PIXELS
    filters.SMALL_PIXELS = 0
    try:
        yield
    finally:
        filters.SMALL_PIXELS = old


def worker_init(max_pixels: int | None, threads: int | None) -> None:
    """Per worker: Pillow's decompression-bomb limit, one numba thread when several processes share cores, and
    the compiled kernels for every image (see compiled_kernels)."""
    from . import filters

    filters.SMALL_PIXELS = 0
    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = max_pixels
    if threads is not None:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
