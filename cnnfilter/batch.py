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
import re
import sys
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from PIL import Image

from .outputs import OutputError, Resolver, about, clean, inside, quoted, remove_stale, resolve, safe_part

GLOB_CHARS = set("*?[")


@functools.cache
def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow can read (``.png``, ``.jpg``, ...), lower case (loads every Pillow plugin, once)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


class _ImageSuffixes:
    """``ext in IMAGE_SUFFIXES``: the suffixes of Pillow's five common formats (PNG, JPEG, GIF, BMP, PPM) answer
    without loading every plugin (about 30 ms of a batch's start); any other suffix loads them, once."""

    def __contains__(self, ext) -> bool:
        if not ext:  # a name without a suffix (README, a folder's name): never an image, and no plugin to load
            return False
        Image.preinit()
        fmt = Image.EXTENSION.get(ext)
        return (fmt is not None and fmt in Image.OPEN) or ext in image_suffixes()


IMAGE_SUFFIXES = _ImageSuffixes()


class Source(NamedTuple):
    """One input file and where it sits relative to the argument it came from (kept under ``-o DIR``)."""

    path: Path
    rel: Path


def iter_sources(args: Iterable[str], *, recursive: bool = False, exclude: Path | None = None,
                 outputs: re.Pattern | None = None) -> Iterator[Source | Result]:
    """Stream the files named by ``args``: files as given, folders (their images; all levels with ``recursive``)
    and glob patterns (``**`` when ``recursive``). Files inside folders are filtered by image suffix and sorted per
    folder; a file named explicitly is always taken (a bad one is reported when read). An argument that names
    nothing yields a failed :class:`Result`. Files under ``exclude`` (the output folder) are never taken, so a
    batch writing inside its own input folder does not feed on its results. A file that a folder or a glob finds and
    whose name ``outputs`` matches (see :func:`output_pattern`) is an earlier result of the same command: it is
    yielded as an ``ignored`` :class:`Result`, never as input. Symbolic links to folders are not followed, by
    folder walks and ``**`` alike (a link loop cannot make a batch endless)."""
    skip = _resolved(exclude) if exclude is not None else None
    for arg in args:
        p = Path(arg)
        try:
            if p.is_dir() and _inside(p, skip):  # said, not silently empty: "-o ." with photos/ is a common try
                where = "is" if _resolved(p) == skip else "is inside"
                yield _in_output_folder(p, f"{quoted(arg)} {where}", exclude)
            elif p.is_dir():
                for src in _walk(p, recursive, IMAGE_SUFFIXES, skip):
                    yield _unless_output(src, outputs)
            elif p.exists() or p.is_symlink():
                yield Source(p, Path(_safe_name(p.name)))
            elif GLOB_CHARS & set(arg):
                root = Path(_glob_root(arg))
                found = excluded = False
                for m in _glob(arg, root, recursive):
                    mp = Path(m)
                    if mp.is_file() and _inside(mp, skip):
                        excluded = True
                    elif mp.is_file():
                        found = True
                        yield _unless_output(Source(mp, _relative(mp, root)), outputs)
                if not found:
                    yield (_in_output_folder(p, f"every file {quoted(arg)} matches is inside", exclude) if excluded else
                           Result(p, None, "failed", f"no file matches {quoted(arg)}"))
            else:
                yield Result(p, None, "failed", f"cannot read {quoted(arg)}: no such file or folder")
        except OSError as exc:  # a name too long, a folder that cannot be listed
            yield Result(p, None, "failed", f"cannot read {quoted(arg)}: {exc.strerror or exc}")
        except ValueError as exc:
            yield Result(p, None, "failed", str(exc))


def _in_output_folder(arg: Path, what: str, folder) -> Result:
    return Result(arg, None, "failed", f"{what} the output folder {quoted(folder)}, which a batch "
                  "never reads (its results would be read back as inputs); write the results to a folder outside "
                  "the inputs", usage=True)


def _unless_output(src: Source, outputs: re.Pattern | None) -> Source | Result:
    if outputs is not None and outputs.fullmatch(src.path.name):
        return Result(src.path, None, "ignored", "named like an output of this command")
    return src


def output_pattern(template: str, label: str, ext: str | None) -> re.Pattern | None:
    """A regular expression for the names ``template`` gives (``{stem}`` and ``{name}`` any text, ``{kernel}`` as
    given, ``{ext}`` any extension: a run with ``-f png`` after one that kept JPEGs must not sharpen the
    ``*.sharpen.jpg`` again), so that a re-run does not take its own results as input; None when the template adds
    nothing to a name (``{stem}.{ext}``), since every input would match."""
    import string

    parts, literal = [], ""
    for text, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(text))
        literal += text
        if field in ("stem", "name"):
            parts.append(".+")
        elif field == "kernel":
            parts.append(re.escape(clean(label)))
            literal += label
        elif field == "ext":
            parts.append("[A-Za-z0-9]+")
    if not literal.strip(".") or literal in (".", "." + (ext or "")):
        return None
    return re.compile("".join(parts), re.S)


def _glob(pattern: str, root: Path, recursive: bool) -> list[str]:
    """Matches of ``pattern``, sorted. A recursive ``**`` walks without following symbolic links to folders
    (Python's glob follows them, so a link loop would repeat forever); hidden names are skipped, as glob does."""
    rest = Path(pattern).parts[len(root.parts) if str(root) != "." else 0:]
    if not (recursive and "**" in rest):
        return sorted(glob.iglob(pattern, recursive=recursive))
    if ".." in rest:
        msg = f"{quoted(pattern)}: '..' in a recursive pattern is not supported (it could climb through links)"
        raise ValueError(msg)
    try:
        rx = re.compile(_translate(rest))
    except re.error as exc:
        msg = f"{quoted(pattern)} is not a valid pattern ({exc})"
        raise ValueError(msg) from None
    show_hidden = rest[-1].startswith(".")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_folder = os.path.relpath(folder, root)
        for name in [*files, *dirs]:
            if name.startswith(".") and not show_hidden:
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if rx.fullmatch(rel):
                found.append(str(root / rel) if str(root) != "." else rel)
    return sorted(found)


def _translate(parts) -> str:
    """A regular expression for glob pattern parts (``**`` = any number of folders, ``*`` and ``?`` within one
    name, ``[...]`` classes) matched against ``/``-separated relative paths."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append("(?:[^/]+/)*" if not last else "(?:[^/]+/)*[^/]+")
            continue
        out.append(_translate_part(part) + ("" if last else "/"))
    return "".join(out)


def _translate_part(part: str) -> str:
    rx, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            rx.append("[^/]*")
        elif c == "?":
            rx.append("[^/]")
        elif c == "[" and "]" in part[i + 2:]:  # a class; a ']' or '!' right after '[' is part of it
            j = part.index("]", i + 2) if part[i + 1:i + 2] in ("]", "!") else part.index("]", i + 1)
            inner = part[i + 1:j]
            neg = inner.startswith("!")
            inner = inner[1:] if neg else inner
            rx.append("[" + ("^" if neg else "") + inner.replace("\\", "\\\\") + "]")
            i = j
        else:
            rx.append(re.escape(c))
        i += 1
    return "".join(rx)


def _relative(path: Path, root: Path) -> Path:
    """``path`` relative to ``root`` after collapsing ``..`` lexically; a path that leaves ``root`` keeps only its
    name (so ``in/*/../../victim/x.png`` under ``-o out`` is ``out/x.png``, never ``victim/x.png``)."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        return Path(_safe_name(path.name))
    return Path(*[_safe_name(part) for part in Path(rel).parts])


def _safe_name(name: str) -> str:
    """A path component with separators and control characters made ``_``; ``.`` and ``..`` made names."""
    return safe_part(name) if name in ("", ".", "..") else clean(name)


def _resolved(path: Path, resolver=None) -> Path | None:
    try:
        return resolver(path) if resolver is not None else path.resolve()
    except (OSError, RuntimeError, OutputError):
        return None


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
    if folder is None:
        return False
    resolved = _resolved(path)
    return resolved is not None and resolved.is_relative_to(folder)


def _walk(root: Path, recursive: bool, suffixes: Container[str], skip: Path | None) -> Iterator[Source]:
    if _inside(root, skip):
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        dirs[:] = [] if not recursive else [d for d in dirs if not _inside(Path(folder) / d, skip)]
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                path = Path(folder) / name
                yield Source(path, Path(*[_safe_name(p) for p in path.relative_to(root).parts]))


TEMPLATE_FIELDS = ("stem", "name", "kernel", "ext")


def check_template(template: str) -> None:
    """Only the plain fields ``{stem}``, ``{name}``, ``{kernel}``, ``{ext}`` (no attributes, indexes or formats)."""
    import string

    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None or spec or conv]
    except ValueError as exc:
        msg = f"--name {template!r} is not a valid template: {exc}"
        raise ValueError(msg) from None
    formatted = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None and (spec or conv)]
    if formatted:
        msg = f"--name {template!r} is not a valid template: {{{formatted[0]}}} has a format or conversion"
        raise ValueError(msg)
    bad = [f for f in fields if f not in TEMPLATE_FIELDS]
    if bad:
        msg = f"--name {template!r} is not a valid template (fields: {{stem}}, {{name}}, {{kernel}}, {{ext}}; not {bad[0]!r})"
        raise ValueError(msg)


def output_path(src: Source, *, out_dir: Path | None, template: str, label: str, ext: str | None,
                resolver=resolve) -> Path:
    """Where ``src``'s result goes: ``template`` (fields ``{stem}``, ``{name}``, ``{kernel}``, ``{ext}``) next to
    the input, or under ``out_dir`` at the input's relative path (``template`` checked by :func:`check_template`).
    ``ext`` None: the input's own extension when Pillow can write its format, else ``png``. ``resolver``: a
    planning's :class:`~cnnfilter.outputs.Resolver` (each folder resolved once)."""
    from .io import same_ext

    ext = same_ext(src.path) if ext is None else ext
    stem, full = clean(src.path.stem), clean(src.path.name)
    try:
        name = template.format(stem=stem, name=full, kernel=clean(label), ext=ext)
    except (KeyError, IndexError, ValueError) as exc:
        msg = f"--name {template!r} is not a valid template (fields: {{stem}}, {{name}}, {{kernel}}, {{ext}}): {exc}"
        raise ValueError(msg) from None
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        msg = f"--name {template!r} gives {quoted(name)}, not a file name"
        raise ValueError(msg)
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        msg = f"the output name {quoted(name[:40] + '...')} is longer than 255 bytes"
        raise ValueError(msg)
    if out_dir is None:
        return src.path.parent / name
    target = out_dir / src.rel.parent / name
    inside(target, out_dir, resolver)  # no symbolic link or '..' takes a result out of the output folder
    return target


class Result(NamedTuple):
    """What became of one input: ``status`` is ``done``, ``skipped`` (output exists), ``failed``, or ``ignored`` (a
    result of an earlier run, found in an input folder)."""

    source: Path
    target: Path | None
    status: str
    message: str = ""
    usage: bool = False  # failed because the command line contradicts itself (an output that is an input)


class Job(NamedTuple):
    """``source`` to be written to ``target``. An ``--in-place`` job carries ``stamp``, the file's identity when
    the batch was planned (:func:`stamp_of`): a job run again after a worker died is not run twice on a file that
    worker had already replaced (filtering it twice)."""

    source: Path
    target: Path
    stamp: tuple | None = None


def stamp_of(path) -> tuple:
    """What changes when a file is replaced (a new inode by the atomic rename) or rewritten: (device, inode, size,
    modification time in ns)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def plan(sources: Iterable[Source | Result], name_for: Callable[[Source], Path], *, overwrite: bool = False,
         skip_existing: bool = False, in_place: bool = False, other_inputs: Iterable = (),
         resolver: Resolver | None = None) -> Iterator[Job | Result]:
    """A :class:`Job` per source, or a :class:`Result` when it must not run: its output exists (``skipped`` with
    ``skip_existing``, else ``failed`` unless ``overwrite``), is the input itself (unless ``in_place``), is another
    input of the batch, or another input's output. Every input is listed before any output is chosen. Anything that
    goes wrong for one entry (a symbolic link loop, a name too long) is that entry's failure. Temporaries left by
    killed runs next to each output are removed. ``resolver``: the planning's :class:`Resolver`, shared with
    ``name_for`` (a new one otherwise)."""
    from .outputs import OutputPolicy

    sources = list(sources)
    paths = [s.path for s in sources if isinstance(s, Source)] + [Path(p) for p in other_inputs]
    fast = resolver or Resolver()
    policy = OutputPolicy(overwrite=overwrite, input_files={r for r in (_resolved(p, fast) for p in paths)
                                                            if r is not None}, resolve=fast)
    planned = []
    for src in sources:
        if isinstance(src, Result):
            planned.append(src)
            continue
        try:
            planned.append(_plan_one(src, name_for, policy, skip_existing, in_place))
        except (OSError, RuntimeError, ValueError, OutputError) as exc:
            if isinstance(exc, RuntimeError):
                why = "a symbolic link loop"
            elif isinstance(exc, OSError):
                why = f"{exc.strerror or exc}"
            else:
                why = str(exc)
            planned.append(Result(src.path, None, "failed", why))
    remove_stale(policy.claimed)
    yield from planned


def _plan_one(src: Source, name_for, policy, skip_existing: bool, in_place: bool) -> Job | Result:
    """One entry through the output policy (the same rules as every other output of every command)."""
    own = policy.resolve(src.path)
    if in_place:
        if src.path.is_symlink():  # its target may lie anywhere: name the target itself
            return Result(src.path, own, "failed", "is a symbolic link; --in-place writes regular files only")
        if not os.stat(own).st_mode & 0o222:
            return Result(src.path, own, "failed", "is read-only; --in-place will not replace it")
        if own in policy.claimed:
            return Result(src.path, own, "failed", f"{quoted(src.path)} is named twice")
        policy.claimed[own] = f"the result of {quoted(src.path)}"
        return Job(src.path, own, stamp_of(own))
    dst = name_for(src)
    key = policy.resolve(dst)
    if key == own:
        return Result(src.path, dst, "failed", "the output would overwrite the input; use --in-place to allow it",
                      usage=True)
    err = policy.conflict(dst, "the output", new_folder=True, exists_hint="use --overwrite or --skip-existing")
    if err is not None:
        if err.exists and skip_existing:
            policy.claimed[key] = f"the result of {quoted(src.path)}"
            return Result(src.path, dst, "skipped", "output exists")
        return Result(src.path, dst, "failed", str(err), usage=err.usage)
    policy.claimed[key] = f"the result of {quoted(src.path)}"
    return Job(src.path, dst)


class Request(NamedTuple):
    """What a command that writes one image per input was asked: its inputs (files, folders, globs, or ``-``),
    the ``label`` that names outputs (``sharpen``, ``max2``), where outputs go and how they are named, what may be
    replaced, and the other files it reads (kernel files) or writes (``raw``)."""

    images: tuple[str, ...]
    label: str
    output: str | None = None
    fmt: str | None = None
    template: str | None = None
    suffix: str | None = None
    recursive: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    in_place: bool = False
    quality: int | None = None
    raw: str | None = None
    other_inputs: tuple = ()


class Plan(NamedTuple):
    """What :func:`prepare` decided: ``many`` (a batch: ``items`` for a :class:`Runner`, one summary) or a single
    file or stream (``items`` holds its one :class:`Job`, or the :class:`Result` that says why it will not run)."""

    many: bool
    items: list


def many(images) -> bool:
    """Several inputs: more than one argument, a folder, or a glob (a pattern that is not itself a file)."""
    return len(images) > 1 or any(Path(a).is_dir() or (GLOB_CHARS & set(a) and not Path(a).exists())
                                  for a in images)


def prepare(req: Request) -> Plan:
    """Check a request and list its work, before any is done: every usage problem raises
    :class:`~cnnfilter.outputs.OutputError` (``usage``: the command line contradicts itself) or ValueError; a
    batch never takes as input a file named like this command's outputs, and an existing output is skipped
    (a re-run does nothing but say so) unless ``overwrite``."""
    from .io import LOSSY, check_target, format_of, suffix_for

    def usage(msg):
        return OutputError(msg, usage=True)

    if req.in_place and (req.output is not None or req.fmt or req.template is not None or req.suffix is not None):
        raise usage("--in-place writes over each input in its own format; it takes no -o, -f, --name or --suffix")
    if req.template is not None and req.suffix is not None:
        raise usage("--name and --suffix are two ways to say the same thing; give one")
    if req.overwrite and req.skip_existing:
        raise usage("--overwrite and --skip-existing contradict each other; give one")
    images, output = req.images, req.output
    if "-" in images:
        if len(images) > 1:
            raise usage("- (standard input) cannot be mixed with other inputs")
        if output is None:
            raise usage("reading standard input needs -o/--output (a file, or - for standard output)")
        check_target(output, req.fmt)
        if output != "-" and Path(output).exists() and not req.overwrite:  # the rule for every other input
            if req.skip_existing:
                return Plan(False, [Result("-", output, "skipped", "it exists")])
            raise OutputError(f"{output!r} exists; use --overwrite or --skip-existing")
        claim(req.raw, None, output, req.overwrite, req.other_inputs)
        if output != "-":
            claim(output, None, None, True, req.other_inputs, what="output")
        check_streams("-", output, req.raw, req.other_inputs)
        return Plan(False, [Job("-", output)])
    several = many(images)
    to_dir = output is not None and (several or output.endswith(("/", os.sep)) or Path(output).is_dir())
    if output == "-" and several:
        raise usage("-o - (standard output) takes a single input image")
    if several and output not in (None, "-") and not Path(output).exists() and not output.endswith(("/", os.sep)) \
            and Path(output).suffix.lower() in IMAGE_SUFFIXES:  # '-o result.jpg' for a folder: not a new folder
        raise usage(f"-o {output!r} names an image file, but there are several inputs: give a folder (an existing "
                    "one, or a name ending in /), or one input")
    ext = suffix_for(req.fmt) if req.fmt else None  # None: each output keeps its input's format
    if req.quality is not None and req.fmt and check_target("-", req.fmt) not in LOSSY:
        raise usage(f"--quality is for JPEG and WebP; -f {req.fmt} is lossless")
    template = req.template
    if template is None:
        template = "{stem}" + req.suffix + ".{ext}" if req.suffix is not None else "{stem}.{kernel}.{ext}"
    out_dir = None
    folders = Resolver()  # this planning's: each folder resolved once, for the outputs and the policy alike
    if output is not None and not to_dir:
        if output != "-" and resolve(output) == resolve(images[0]):
            raise usage(f"output {output!r} is the input image; use --in-place to write over it")
        check_target(output, req.fmt)

        def name_for(src):
            return Path(output)
    else:
        out_dir = Path(output) if to_dir else None
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise usage(f"-o {output!r} is a file; several inputs need a folder")
        check_target(f"x.{ext or 'png'}", req.fmt)
        check_template(template)
        output_path(Source(Path("x.png"), Path("x.png")), out_dir=out_dir, template=template, label=req.label,
                    ext=ext)  # a template that names no file is a usage error

        def name_for(src):
            return output_path(src, out_dir=out_dir, template=template, label=req.label, ext=ext, resolver=folders)
    # a folder or a glob never feeds a run its own earlier results; in a batch an existing output is skipped unless
    # --overwrite (a re-run does nothing but say so)
    pattern = None if req.in_place or (output is not None and not to_dir) else output_pattern(template, req.label, ext)
    sources = iter_sources(images, recursive=req.recursive, exclude=out_dir, outputs=pattern)
    skip = req.skip_existing or (several and not req.overwrite and not req.in_place)
    items = list(plan(sources, name_for, overwrite=req.overwrite, skip_existing=skip, in_place=req.in_place,
                      other_inputs=req.other_inputs, resolver=folders))
    jobs = [j for j in items if isinstance(j, Job)]
    if req.quality is not None and not req.fmt and output != "-" and jobs:
        if not any(format_of(j.target) in LOSSY for j in jobs):
            raise usage("--quality is for JPEG and WebP outputs; these outputs are lossless (use -f jpeg)")
    if several:
        if not items:
            raise OutputError(f"no images found in {', '.join(map(repr, images))}")
        if all(isinstance(i, Result) and i.usage for i in items):  # the command line contradicts itself: exit 2
            first = items[0]
            raise OutputError(about(first.source, first.message) + (f" (and {len(items) - 1} more like it)" if len(items) > 1 else ""), usage=True)
        return Plan(True, items)
    if output == "-":
        claim(req.raw, images[0], None, req.overwrite, req.other_inputs)
        check_streams(images[0], "-", req.raw, req.other_inputs)
        return Plan(False, [Job(images[0], "-")])
    item = items[0] if items else None
    if isinstance(item, Result) and item.status == "failed":
        raise OutputError(item.message, usage=item.usage)
    if isinstance(item, Job):
        claim(req.raw, item.source, item.target, req.overwrite, req.other_inputs)
    return Plan(False, [item] if item is not None else [])


def claim(path, source, target, overwrite: bool, other_inputs=(), what: str = "--raw") -> None:
    """A second output (``--raw``), or the output of standard input, through the output policy: never the input
    (image or kernel file), never the image output ``target``, never an existing file without --overwrite; checked
    before any work."""
    if path is None:
        return
    from .outputs import OutputPolicy

    policy = OutputPolicy(overwrite=overwrite)
    for given in [source, *other_inputs]:
        if given is not None and given != "-":
            policy.input_files.add(resolve(given))
    if target is not None and target != "-":
        policy.claimed[resolve(target)] = "the output image"
    policy.claim(path, what)


def check_streams(source, target, raw, other_inputs) -> None:
    """Standard input and output are files too (``< a.png``, ``> k.txt``, ``1<>a.png``): never write to one that is
    an input."""
    inputs = ([] if source == "-" else [source]) + [str(p) for p in other_inputs]
    if target == "-":
        for path in inputs:
            if _same_file(1, path):
                raise OutputError(f"standard output is the input {path!r}; it would be overwritten", usage=True)
        if source == "-" and _same_fds(0, 1):
            raise OutputError("standard output is the file on standard input; it would be overwritten", usage=True)
    if source == "-":
        for out in (target, raw):
            if out not in (None, "-") and _same_file(0, out):
                raise OutputError(f"output {out!r} is the file on standard input; it would be overwritten",
                                  usage=True)


def _same_fds(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except (OSError, ValueError):
        return False
    import stat

    return stat.S_ISREG(sa.st_mode) and os.path.samestat(sa, sb)


def _same_file(fd: int, path) -> bool:
    """Whether the descriptor ``fd`` (0 or 1) is the file ``path`` (``< a.png`` or ``> a.png`` on the command
    line)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except (OSError, ValueError):
        return False


class Settings(NamedTuple):
    """What every unit of work of a batch runs under, wherever it runs: Pillow's decompression-bomb limit
    (None: Pillow's), the memory limit (None: the default), and the filter engine (``config.ENGINE``)."""

    max_pixels: int | None = None
    max_memory: int | None = None
    engine: str | None = None  # None: leave config.ENGINE as it is (CNNFILTER_ENGINE, or auto)

    @contextlib.contextmanager
    def applied(self):
        """These settings in this process for the duration."""
        from . import config
        from .limits import memory_limit

        old = config.ENGINE
        config.ENGINE = self.engine or old
        try:
            with pixel_limit(self.max_pixels), memory_limit(self.max_memory):
                yield
        finally:
            config.ENGINE = old


def engine_for(jobs: int, processes: int, *, exact: bool = False) -> str:
    """``compiled`` when each worker has enough images to repay loading numba (``config.COMPILED_MIN_JOBS``, or
    ``COMPILED_MIN_JOBS_EXACT`` for integer kernels, which numpy filters almost as fast), else ``auto`` (the numpy
    engine for small images, as a one-off command); ``config.ENGINE`` when the user set it."""
    from . import config

    if config.ENGINE != "auto":
        return config.ENGINE
    per_worker = config.COMPILED_MIN_JOBS_EXACT if exact else config.COMPILED_MIN_JOBS
    return "compiled" if jobs >= per_worker * max(processes, 1) else "auto"


class Runner(Protocol):
    """Where a batch's work runs: :class:`InProcess`, :class:`ProcessPool` (a Dask runner can sit behind the same
    interface). ``run`` yields one :class:`Result` per item as it finishes; a :class:`Result` item passes straight
    through; ``work(source, target)`` raises to report a failure."""

    def run(self, items: Iterable[Job | Result], work: Callable[[Path, Path], None], *,
            fail_fast: bool = False) -> Iterator[Result]: ...


class InProcess(NamedTuple):
    """One job after another in this process."""

    settings: Settings = Settings()

    def run(self, items, work, *, fail_fast=False):
        with self.settings.applied():
            for item in items:
                res = item if isinstance(item, Result) else attempt(work, item.source, item.target, item.stamp)
                yield res
                if fail_fast and res.status == "failed":
                    return


class ProcessPool(NamedTuple):
    """``processes`` worker processes, started once per batch (so each loads the compiled loops at most once),
    each under ``settings`` with one numba thread, sent ``chunk`` jobs at a time (:func:`chunk_size`)."""

    processes: int
    settings: Settings = Settings()
    chunk: int = 1

    def run(self, items, work, *, fail_fast=False):
        if self.processes <= 1:
            return InProcess(self.settings).run(items, work, fail_fast=fail_fast)
        return run(items, work, processes=self.processes, fail_fast=fail_fast, initializer=worker_init,
                   initargs=(self.settings, 1), chunk=self.chunk)


MAX_CHUNK = 4


def chunk_size(count: int, processes: int) -> int:
    """Jobs per message to a worker process for ``count`` jobs on ``processes`` workers: up to :data:`MAX_CHUNK`,
    while every worker still gets eight messages. Each message costs this process about a millisecond of CPU
    (pickling, the pool's threads waking), taken from the workers on a small machine (measured: 1.2 s of this
    process's CPU for 800 photos sent one at a time, on 2 cores)."""
    return max(1, min(MAX_CHUNK, count // (8 * max(processes, 1))))


def run(items: Iterable[Job | Result], work: Callable[[Path, Path], None], *, processes: int = 1,
        fail_fast: bool = False, initializer: Callable | None = None, initargs: tuple = (),
        chunk: int = 1) -> Iterator[Result]:
    """Run ``work(source, target)`` for each :class:`Job` (a :class:`Result` passes straight through), yielding a
    :class:`Result` per input as it finishes.

    ``work`` raises to report a failure; its message becomes the result's. With ``processes > 1`` the work runs in
    that many worker processes (``work`` and ``initializer`` must be picklable), ``chunk`` jobs per message, with
    at most ``2 * processes`` messages in flight, so memory holds a few images whatever the number of files. When a
    worker dies (killed, out of memory), every job in flight is lost with it: each is tried once more, alone, in a
    fresh pool, so only the file that kills a worker twice fails. Workers exit when this process dies.
    ``fail_fast`` stops after the first failure (a message's later jobs are not started).
    """
    if processes <= 1:  # in this process: the caller sets any limits (see Settings.applied)
        yield from InProcess().run(items, work, fail_fast=fail_fast)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    window = 2 * processes
    # fork is cheaper (no fresh interpreter, numpy and Pillow already imported) and safe while this process has
    # not loaded numba (whose thread pool a fork would inherit half-initialised); otherwise spawn.
    ctx = multiprocessing.get_context("fork" if "numba" not in sys.modules and sys.platform == "linux" else "spawn")
    parent = os.getpid()

    def new_pool():
        return ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_start,
                                   initargs=(parent, initializer, initargs))

    pool = new_pool()
    pending: dict = {}  # Future -> (jobs, tries, pool)
    retry: deque = deque()  # jobs in flight when a worker died: tried again one at a time
    it = iter(items)
    exhausted = stop = False
    try:
        while True:
            alone = any(tries > 1 for _, tries, _ in pending.values())
            while not stop and not alone and len(pending) < window:
                if retry:
                    if pending:
                        break  # a retry runs alone: if it kills its worker again, it takes nothing else with it
                    jobs, tries = [retry.popleft()], 2
                else:
                    jobs = []
                    while not exhausted and not stop and len(jobs) < chunk:
                        item = next(it, None)
                        if item is None:
                            exhausted = True
                        elif isinstance(item, Result):
                            yield item
                            stop = stop or (fail_fast and item.status == "failed")
                        else:
                            jobs.append(item)
                    if not jobs:
                        break
                    tries = 1
                pairs = [(job.source, job.target, job.stamp) for job in jobs]
                try:
                    fut = pool.submit(_attempt_each, work, pairs, fail_fast)
                except BrokenProcessPool:  # a worker died earlier: start a fresh pool for the rest
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool()
                    fut = pool.submit(_attempt_each, work, pairs, fail_fast)
                pending[fut] = (jobs, tries, pool)
                alone = tries > 1
            if not pending:
                if stop or (exhausted and not retry):
                    return
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                jobs, tries, owner = pending.pop(fut)
                if isinstance(fut.exception(), BrokenProcessPool):
                    if owner is pool:  # the first loss seen from this pool: replace it
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                    if tries == 1 and not stop:
                        retry.extend(jobs)
                        continue
                for res in _collect(fut, jobs, tries):
                    yield res
                    stop = stop or (fail_fast and res.status == "failed")
            if stop:  # report what is already running, start nothing more
                for fut in list(pending):
                    if not fut.cancel():
                        yield from _collect(fut, pending[fut][0])
                for job in retry:
                    yield Result(job.source, job.target, "failed", "not retried after --fail-fast stopped the batch")
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _attempt_each(work: Callable[[Path, Path], None], pairs: list, fail_fast: bool) -> list[Result]:
    """:func:`attempt` for each (source, target) of one message, in a worker; with ``fail_fast`` the jobs after a
    failure are not started."""
    out = []
    for src, dst, stamp in pairs:
        out.append(attempt(work, src, dst, stamp))
        if fail_fast and out[-1].status == "failed":
            break
    return out


def _collect(fut, jobs: list[Job], tries: int = 1) -> list[Result]:
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001 - the worker process died (killed, out of memory)
        from concurrent.futures.process import BrokenProcessPool

        why = (f"it died while processing this file{', twice' if tries > 1 else ''} (killed, or out of memory)"
               if isinstance(exc, BrokenProcessPool) else str(exc))
        return [Result(job.source, job.target, "failed", f"worker process failed: {why}") for job in jobs]


def _worker_start(parent: int, initializer, initargs) -> None:
    """In each worker: exit as soon as the parent process is gone (killed, or terminated), the settings of a
    process cnnfilter owns (:func:`cnnfilter.runtime.tune`; a spawned worker inherits none of the parent's), then
    the caller's initializer."""
    import threading
    import time

    from . import runtime

    runtime.tune()

    if sys.platform == "linux":  # the kernel's own notice: SIGKILL when the parent dies
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass
    if os.getppid() != parent:  # the parent died before the notice was set up
        os._exit(1)

    def watch():  # everywhere else, and as a second check: poll
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="cnnfilter-parent-watch").start()
    if initializer is not None:
        initializer(*initargs)


def attempt(work: Callable[[Path, Path], str | None], src: Path, dst: Path, stamp: tuple | None = None) -> Result:
    """``work(src, dst)`` as a :class:`Result`: what it raised becomes the file's failure message, never the batch's
    end; a text it returns (a note on what it did, such as how the image was resized) becomes the done Result's
    message. Every runner runs its jobs through this. With ``stamp`` (an in-place job, see :class:`Job`) a file
    that is no longer the one planned is skipped, not filtered again."""
    from .io import ImageReadError, ImageWriteError

    try:
        if stamp is not None and stamp_of(dst) != stamp:
            return Result(src, dst, "skipped", "already replaced (by a worker that died before it could report), "
                          "or changed since the batch began")
        note = work(src, dst)
    except (ImageReadError, ImageWriteError, ValueError, TypeError) as exc:
        return Result(src, dst, "failed", str(exc))
    except OSError as exc:
        return Result(src, dst, "failed", f"{exc.strerror or exc}: {quoted(exc.filename or src)}")
    except MemoryError:
        return Result(src, dst, "failed", "not enough memory (raise the limits, or use fewer --jobs)")
    except RuntimeError as exc:  # Path.resolve on a symbolic link loop (Python 3.11), among others
        why = "a symbolic link loop" if "loop" in str(exc).lower() else f"RuntimeError: {exc}"
        return Result(src, dst, "failed", why)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch; the message says what it was
        return Result(src, dst, "failed", f"{type(exc).__name__}: {exc}")
    return Result(src, dst, "done", note if isinstance(note, str) else "")


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


def worker_init(settings: Settings, threads: int | None) -> None:
    """Per worker: the batch's :class:`Settings` for its whole life, and one numba thread when several processes
    share cores."""
    from . import config, limits

    config.ENGINE = settings.engine or config.ENGINE
    limits.set_memory_limit(settings.max_memory)
    if settings.max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = settings.max_pixels
    if threads is not None:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
