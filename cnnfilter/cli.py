"""The ``cnnfilter`` command: parse, call one library function, report. No arithmetic here.

Exit codes: 0 success, 1 failure (unreadable input, unwritable output), 2 usage error (bad option or value).
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from . import __version__

BORDERS = ("constant", "edge", "reflect", "symmetric", "wrap")
METHODS = ("auto", "direct", "separable", "fft")


class _Group(click.Group):
    """A group whose errors are one line, ``cnnfilter: error: ...``, with Click's exit codes."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args  # accepted anywhere on the line, not only before the command
        args = [a for a in args if a != "--debug"]
        _one_line_warnings()
        try:
            code = super().main(args, prog_name or "cnnfilter", standalone_mode=False, **extra)
            _flush_stdout()
        except click.exceptions.NoArgsIsHelpError as exc:  # plain `cnnfilter`: the help, not an error
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.exceptions.Abort:
            click.echo("cnnfilter: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            if debug:
                raise
            click.echo(f"cnnfilter: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `cnnfilter ... -o - | head`: the reader left; stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except (OSError, MemoryError, RecursionError) as exc:  # the system said no: one line, exit 1
            if debug:
                raise
            _close_stdout()
            click.echo(f"cnnfilter: error: {_system_error(exc)}", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug: say so in one line unless debugging
            if debug:
                raise
            click.echo(f"cnnfilter: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                       err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _one_line_warnings() -> None:
    """Python warnings (a corrupt EXIF block, ...) as one line each, ``cnnfilter: warning: ...``, never a
    multi-line report with source paths."""
    import warnings

    from .limits import shorten

    def show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"cnnfilter: warning: {shorten(str(message), 200)}", err=True)

    warnings.showwarning = show


def _flush_stdout() -> None:
    """Flush standard output now, so that a full disk or a closed pipe is an error here and not a traceback at
    exit."""
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError:
            _close_stdout()
            raise


def _close_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's own flush at exit cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    except OSError:
        pass


def _system_error(exc: BaseException) -> str:
    from .limits import printable

    if isinstance(exc, MemoryError):
        return "out of memory (lower --max-memory, or give fewer or smaller inputs)"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    name = f": {printable(str(exc.filename))!r}" if getattr(exc, "filename", None) else ""
    return f"{printable(exc.strerror or str(exc))}{name}"


def _ints(text: str, name: str, minimum: int):
    """``"2"`` -> 2, ``"2,3"`` -> (2, 3)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an int or two ints 'rows,cols'", param_hint=name) from None
    if len(values) not in (1, 2) or min(values) < minimum:
        raise click.BadParameter(f"{text!r} must be one or two ints 'rows,cols', each at least {minimum}",
                                 param_hint=name)
    return values[0] if len(values) == 1 else tuple(values)


def _padding(text: str, *, words: bool = True):
    if words and text in ("same", "valid", "full"):
        return text
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        allowed = "'same', 'valid', 'full', " if words else ""
        raise click.BadParameter(f"{text!r} is not one of {allowed}N, 'ph,pw' or 'top,bottom,left,right'",
                                 param_hint="--padding") from None
    if len(values) not in (1, 2, 4) or min(values) < 0:
        raise click.BadParameter(f"{text!r} must be 1, 2 or 4 non-negative ints", param_hint="--padding")
    if len(values) == 4:
        return (values[0], values[1]), (values[2], values[3])
    return values[0] if len(values) == 1 else tuple(values)


def _run(fn):
    """Call the library; map its errors to exit codes (ValueError/TypeError: usage, 2; I/O: failure, 1)."""
    from .io import ImageReadError, ImageWriteError
    from .outputs import OutputError

    try:
        return fn()
    except OutputError as exc:
        raise (click.UsageError if exc.usage else click.ClickException)(str(exc)) from exc
    except (ImageReadError, ImageWriteError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc


def _batch_options(fn):
    """Options of the commands that take many images: naming, overwriting, parallelism, failures."""
    opts = [
        click.option("--max-pixels", type=click.IntRange(1), metavar="N",
                     help="Refuse images with more pixels (decompression bombs) [default: Pillow's limit, 89478485]."),
        click.option("--max-memory", metavar="SIZE", callback=_size_option,
                     help="Refuse work that would need more memory, shared by the workers "
                          "[default: half the RAM; CNNFILTER_MAX_MEMORY]."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails."),
        click.option("-j", "--jobs", type=click.IntRange(1), metavar="N",
                     help="Worker processes for several files [default: all cores]."),
        click.option("--in-place", is_flag=True, help="Write each result over its input (same name and format)."),
        click.option("--skip-existing", is_flag=True, help="Leave outputs that exist alone (resume a batch)."),
        click.option("--overwrite", is_flag=True, help="Replace outputs that exist."),
        click.option("--suffix", metavar="TEXT", help="Output name STEM+TEXT.EXT (e.g. --suffix _edges)."),
        click.option("--name", "template", metavar="TEMPLATE",
                     help="Output name from {stem} {name} {kernel} {ext} [default: {stem}.{kernel}.{ext}]."),
        click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders (and ** in globs)."),
    ]
    for opt in opts:
        fn = opt(fn)
    return fn


def _size_option(ctx, param, value):
    if value is None:
        return None
    from .limits import parse_bytes

    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _many(images) -> bool:
    """Several inputs: more than one argument, a folder, or a glob (a pattern that is not itself a file)."""
    from .batch import GLOB_CHARS

    return len(images) > 1 or any(Path(a).is_dir() or (GLOB_CHARS & set(a) and not Path(a).exists())
                                  for a in images)


def _raw(raw: str | None, images) -> str | None:
    if raw is not None and _many(images):
        raise click.UsageError("--raw writes one file: give a single input image")
    if raw is not None:
        from .io import RAW_SUFFIXES

        if Path(raw).suffix.lower() not in RAW_SUFFIXES:
            raise click.UsageError(f"--raw {raw!r}: use one of {', '.join(RAW_SUFFIXES)}")
    return raw


def _ext_for(fmt: str | None) -> str:
    """The file suffix written for a Pillow format name (png by default)."""
    if not fmt:
        return "png"
    from PIL import Image

    from .io import check_target

    name = _run(lambda: check_target("-", fmt))
    Image.init()
    exts = [e for e, f in Image.registered_extensions().items() if f == name]
    preferred = {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "WEBP": ".webp"}.get(name)
    return (preferred or (exts[0] if exts else "." + name.lower())).lstrip(".")


def _format_of(path) -> str | None:
    from .io import check_target

    try:
        return check_target("-", Path(path).suffix.lstrip(".") or "png")
    except (ValueError, OSError):
        return None


def _process(images, output, label, work, fmt, quiet, *, recursive, template, suffix, overwrite, skip_existing,
             in_place, jobs, fail_fast, max_pixels, max_memory, raw=None, other_inputs=(), quality=None):
    """Run ``work(source, target)`` over every input and report: one file in this process, many in workers."""
    from . import batch
    from .io import LOSSY, check_target

    if in_place and (output is not None or fmt or template is not None or suffix is not None):
        raise click.UsageError("--in-place writes over each input in its own format; it takes no -o, -f, --name "
                               "or --suffix")
    if template is not None and suffix is not None:
        raise click.UsageError("--name and --suffix are two ways to say the same thing; give one")
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing contradict each other; give one")
    if "-" in images:
        if len(images) > 1:
            raise click.UsageError("- (standard input) cannot be mixed with other inputs")
        if output is None:
            raise click.UsageError("reading standard input needs -o/--output (a file, or - for standard output)")
        _run(lambda: check_target(output, fmt))
        if output != "-" and Path(output).exists() and not overwrite:  # the rule for every other input
            if skip_existing:
                if not quiet:
                    click.echo(f"skipped {_q(output)}: it exists", err=True)
                return None
            raise click.ClickException(f"{output!r} exists; use --overwrite or --skip-existing")
        _claim(raw, None, output, overwrite, other_inputs)
        if output != "-":
            _claim(output, None, None, True, other_inputs, what="output")
        _check_streams("-", output, raw, other_inputs)
        return _work_here(work, "-", output, max_pixels, max_memory)
    many = _many(images)
    to_dir = output is not None and (many or output.endswith(("/", os.sep)) or Path(output).is_dir())
    if output == "-" and many:
        raise click.UsageError("-o - (standard output) takes a single input image")
    ext = _ext_for(fmt) if fmt else None  # None: each output keeps its input's format
    if quality is not None and fmt and _run(lambda: check_target("-", fmt)) not in LOSSY:
        raise click.UsageError(f"--quality is for JPEG and WebP; -f {fmt} is lossless")
    if template is None:
        template = "{stem}" + suffix + ".{ext}" if suffix is not None else "{stem}.{kernel}.{ext}"
    if output is not None and not to_dir:
        from .outputs import resolve

        if output != "-" and _run(lambda: resolve(output)) == _run(lambda: resolve(images[0])):
            raise click.UsageError(f"output {output!r} is the input image; use --in-place to write over it")
        _run(lambda: check_target(output, fmt))
        name_for = lambda src: Path(output)  # noqa: E731
        out_dir = None
    else:
        out_dir: Path | None = Path(output) if to_dir else None
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise click.UsageError(f"-o {output!r} is a file; several inputs need a folder")
        _run(lambda: check_target(f"x.{ext or 'png'}", fmt))
        _run(lambda: batch.check_template(template))
        probe = batch.Source(Path("x.png"), Path("x.png"))  # a template that names no file is a usage error
        _run(lambda: batch.output_path(probe, out_dir=out_dir, template=template, label=label, ext=ext))
        name_for = lambda src: batch.output_path(src, out_dir=out_dir, template=template, label=label, ext=ext)  # noqa: E731
    # a folder or a glob never feeds a run its own earlier results; in a batch an existing output is skipped unless
    # --overwrite (a re-run does nothing but say so)
    pattern = None if in_place or (output is not None and not to_dir) else batch.output_pattern(template, label, ext)
    sources = batch.iter_sources(images, recursive=recursive, exclude=out_dir, outputs=pattern)
    skip = skip_existing or (many and not overwrite and not in_place)
    items = list(batch.plan(sources, name_for, overwrite=overwrite, skip_existing=skip, in_place=in_place,
                            other_inputs=other_inputs))
    if quality is not None and not fmt:
        lossy = [j for j in items if isinstance(j, batch.Job) and _format_of(j.target) in LOSSY]
        if output != "-" and any(isinstance(j, batch.Job) for j in items) and not lossy:
            raise click.UsageError("--quality is for JPEG and WebP outputs; these outputs are lossless (use -f jpeg)")
    items = iter(items)
    if not many:  # one file: here, with usage errors as such
        if output == "-":
            _claim(raw, images[0], None, overwrite, other_inputs)
            _check_streams(images[0], "-", raw, other_inputs)
            return _work_here(work, images[0], "-", max_pixels, max_memory)
        item = next(items, None)
        if isinstance(item, batch.Result) and item.status == "skipped":
            if not quiet:
                click.echo(f"skipped {_q(item.target)}: it exists", err=True)
            return
        if isinstance(item, batch.Result):
            raise (click.UsageError if item.usage else click.ClickException)(item.message)
        _claim(raw, item.source, item.target, overwrite, other_inputs)
        _work_here(work, item.source, item.target, max_pixels, max_memory)
        if not quiet:
            click.echo(f"wrote {_q(item.target)}", err=True)
        return
    from .limits import max_jobs
    from .limits import max_memory as default_memory

    processes = min(jobs or batch.default_jobs(), max_jobs())
    if jobs is not None and jobs > processes and not quiet:
        click.echo(f"cnnfilter: warning: -j {jobs} is more than {processes} (4 per core); using {processes}", err=True)
    budget = (max_memory or default_memory()) // max(processes, 1)
    items = list(items)
    jobs_count = sum(isinstance(j, batch.Job) for j in items)
    settings = batch.Settings(max_pixels, budget, batch.engine_for(jobs_count, processes))
    results = batch.ProcessPool(processes, settings).run(items, work, fail_fast=fail_fast)
    counts = {"done": 0, "skipped": 0, "ignored": 0, "failed": 0}
    failures = []
    show = not quiet and sys.stderr.isatty()
    with ProgressBar(show, len(items)) as advance:
        for res in results:
            counts[res.status] += 1
            if res.status == "failed":
                failures.append(res)
            advance()
    if not any(counts.values()):
        raise click.ClickException(f"no images found in {', '.join(map(repr, images))}")
    if failures or not quiet:
        words = {"skipped": "skipped (outputs exist; --overwrite replaces them)",
                 "ignored": "ignored (named like this command's outputs)"}
        summary = ", ".join(f"{n} {words.get(k, k)}" for k, n in counts.items() if n or k == "done")
        click.echo(f"cnnfilter: {summary}", err=True)
        from .limits import printable
        from .outputs import quoted

        for res in failures:
            click.echo(f"  failed: {quoted(res.source)}: {printable(res.message)}", err=True)
    if failures:
        sys.exit(1)


def _check_streams(source, target, raw, other_inputs) -> None:
    """Standard input and output are files too (``< a.png``, ``> k.txt``, ``1<>a.png``): never write to one that is
    an input."""
    inputs = ([] if source == "-" else [source]) + [str(p) for p in other_inputs]
    if target == "-":
        for path in inputs:
            if _same_file(1, path):
                raise click.UsageError(f"standard output is the input {path!r}; it would be overwritten")
        if source == "-" and _same_fds(0, 1):
            raise click.UsageError("standard output is the file on standard input; it would be overwritten")
    if source == "-":
        for out in (target, raw):
            if out not in (None, "-") and _same_file(0, out):
                raise click.UsageError(f"output {out!r} is the file on standard input; it would be overwritten")


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


def _q(path) -> str:
    """A path for a message line: as it is when plain, quoted when it holds control characters."""
    from .outputs import quoted

    text = str(path)
    return text if text.isprintable() else quoted(text)


def _work_here(work, source, target, max_pixels, max_memory) -> None:
    """One file in this process, its errors mapped to exit codes like any other usage error or failure."""
    from .batch import pixel_limit
    from .limits import memory_limit

    with pixel_limit(max_pixels), memory_limit(max_memory):
        _run(lambda: work(source, target))


def _claim(path, source, target, overwrite: bool, other_inputs=(), what: str = "--raw") -> None:
    """A second output (``--raw``), or the output of standard input, through the output policy: never the input
    (image or kernel file), never the image output ``target``, never an existing file without --overwrite; checked
    before any work."""
    if path is None:
        return
    from .outputs import OutputPolicy, resolve

    policy = OutputPolicy(overwrite=overwrite)
    for given in [source, *other_inputs]:
        if given is not None and given != "-":
            policy.input_files.add(_run(lambda g=given: resolve(g)))
    if target is not None and target != "-":
        policy.claimed[_run(lambda: resolve(target))] = "the output image"
    _run(lambda: policy.claim(path, what))


class ProgressBar:
    """A rich progress bar on stderr (files done, files/s, ETA), or nothing."""

    def __init__(self, show: bool, total: int | None):
        self.show, self.total = show, total

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("files", total=self.total, rate="")
        start = time.monotonic()

        def advance():
            self.bar.advance(task)
            done = self.bar.tasks[0].completed
            self.bar.update(task, rate=f"{done / max(time.monotonic() - start, 1e-9):.1f} files/s")

        return advance

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
        return False


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="cnnfilter")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
def cli(debug):
    """Image convolution, pooling and CNN feature maps.

    \b
    Examples:
      cnnfilter convolve photo.png -k edge
      cnnfilter convolve photo.png -k "0,-1,0;-1,5,-1;0,-1,0" -o sharp.png
      cnnfilter pool photo.png --size 2 --mode avg
      cnnfilter kernels
      cnnfilter train-tiny samples/digits -o digits.cnnf
      cnnfilter predict digits samples/digits/3/0003.png
      cnnfilter featuremaps samples/digits/3/0003.png -m digits -o maps
    """


def _common_output(fn):
    fn = click.option("--raw", type=click.Path(dir_okay=False), metavar="PATH",
                      help="Also write the unrounded float32 result (.npy, .npz, or .tif for greyscale).")(fn)
    fn = click.option("--compress-level", type=click.IntRange(0, 9), metavar="0-9",
                      help="PNG compression [default: 1, fast; Pillow's own default is 6].")(fn)
    fn = click.option("--quality", type=click.IntRange(1, 100), metavar="1-100",
                      help="JPEG/WebP quality [default: a JPEG input's own tables, else 90].")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")(fn)
    fn = click.option("-f", "--format", "fmt", metavar="FMT",
                      help="Output format (png, jpeg, tiff, ...); default: the -o suffix, else each input's own "
                           "format (PNG when Pillow cannot write it).")(fn)
    fn = click.option("-o", "--output", metavar="PATH",
                      help="Output file, folder (several inputs), or - for standard output. Default: "
                           "IMAGE-STEM.LABEL.EXT next to each input.")(fn)
    return fn


def _kernel_params(fn):
    """--size, --sigma, --sigma2, --amount, --angle: parameters of the sized kernels (convolve, kernels)."""
    fn = click.option("--angle", type=float, help="Angle in degrees of the motion kernel (default 0).")(fn)
    fn = click.option("--amount", type=float, help="Strength of the unsharp kernel (default 1).")(fn)
    fn = click.option("--sigma2", type=click.FloatRange(0, min_open=True), help="Second sigma of dog (1.6 sigma).")(fn)
    fn = click.option("--sigma", type=click.FloatRange(0, min_open=True),
                      help="Sigma of gaussian, log, dog, unsharp.")(fn)
    fn = click.option("--size", type=click.IntRange(1, 255), help="Size of a sized kernel (box, gaussian, ...).")(fn)
    return fn


@cli.command(context_settings=_CONTEXT)
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@click.option("-k", "--kernel", "kernels", multiple=True, required=True, metavar="KERNEL",
              help="A name (cnnfilter kernels), a name with its own options 'gaussian:sigma=1.5' or ImageMagick's "
                   "'Gaussian:0x2', a matrix '0,-1,0;-1,5,-1;0,-1,0', ImageMagick's '3x3: 0,-1,0 ...', "
                   "or a .txt/.csv/.npy/.json file. Repeat to chain.")
@_kernel_params
@click.option("--normalize", is_flag=True, help="Divide each kernel by its sum (an error when it sums to 0).")
@click.option("--scale", type=float, help="Multiply each kernel by this (ImageMagick's convolve:scale).")
@click.option("--bias", default="0", show_default=True, metavar="V|P%",
              help="Add to the result: a value, or a percentage of the full range (ImageMagick's -bias).")
@click.option("--output-range", type=click.Choice(("clip", "abs", "normalize", "offset")),
              help="How signed results become pixels [default: abs for kernels summing to 0, else clip].")
@click.option("--stride", default="1", show_default=True, metavar="N|R,C", help="Step between windows.")
@click.option("--padding", default="same", show_default=True, metavar="MODE|N|PH,PW|T,B,L,R",
              help="same, valid, full, or explicit pixel counts.")
@click.option("--dilation", default="1", show_default=True, metavar="N|R,C", help="Spacing between kernel taps.")
@click.option("--border", type=click.Choice(BORDERS), default="reflect", show_default=True,
              help="How padded pixels are made (numpy.pad's names; reflect is OpenCV's default, "
                   "constant with --cval 0 is zero padding).")
@click.option("--cval", type=float, default=0.0, show_default=True, help="Value of padded pixels for --border constant.")
@click.option("--flip", is_flag=True, help="True convolution (ImageMagick's Convolve): flip the kernel first.")
@click.option("--gray", is_flag=True, help="Convert to greyscale (ITU-R 601 luma) before filtering.")
@click.option("--alpha", "alpha_mode", type=click.Choice(("keep", "filter")), default="keep", show_default=True,
              help="keep: alpha passes through; filter: filter it too, colour weighted by alpha (no dark halos).")
@click.option("--depth", type=click.Choice(("8", "16")), callback=lambda c, p, v: v and int(v),
              help="Bits per sample of the output [default: the input's]; 8-bit values are scaled by 257 to 16.")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True, help="Algorithm.")
@_common_output
@_batch_options
def convolve(images, kernels, size, sigma, sigma2, amount, angle, normalize, scale, bias, output_range, stride,
             padding, dilation, border, cval, flip, gray, alpha_mode, depth, method, output, fmt, quiet, quality,
             compress_level, raw, **batch_opts):
    """Filter images with one or more kernels and write the results.

    IMAGE can be files, folders (-r for sub-folders) and globs; - reads standard input. With several inputs,
    -o names a folder (relative paths kept) and files are processed in parallel; a bad file is reported and
    skipped, and the exit code is 1 if any failed. Existing outputs need --overwrite (or --skip-existing).

    The kernel is applied as written, as OpenCV's filter2D and ImageMagick's Correlate do (weight [0,0] lies on
    the window's top-left pixel); --flip gives true convolution. Colour channels are filtered, alpha is kept.
    sobel, scharr, prewitt and roberts give the gradient magnitude sqrt(gx² + gy²). Edge and derivative kernels
    (summing to 0) are written as their absolute value unless --output-range says otherwise; 8-bit results are
    rounded half-to-even and clipped to 0..255.

    \b
    Examples:
      cnnfilter convolve photo.png -k edge                  # -> photo.edge.png
      cnnfilter convolve photo.png -k gaussian --sigma 2 -o soft.png
      cnnfilter convolve photo.png -k sobel                 # gradient magnitude
      cnnfilter convolve photo.png -k "3x3: 0,-1,0 -1,5,-1 0,-1,0"
      cnnfilter convolve photo.png -k my_kernel.csv --normalize
      cnnfilter convolve photo.png -k blur -k sharpen --stride 2
      cnnfilter convolve photo.png -k gaussian:sigma=1.5 -k edge    # each step its own options
      cnnfilter convolve photo.png -k Gaussian:0x2                 # ImageMagick's form
      cnnfilter convolve photo.png -k laplacian --output-range offset
      cat a.png | cnnfilter convolve - -k edge -o - > b.png
      cnnfilter convolve photos/ -r -k sharpen -o sharp/ -j 4 -f jpeg
    """
    from .io import SaveSpec
    from .kernels import Magnitude, adjust_kernel, kernel_file, resolve_steps
    from .ops import FilterSpec, parse_bias, process_file

    _run(lambda: parse_bias(bias, 16))  # a bad --bias is a usage error before any file is read

    geometry = {"stride": _ints(stride, "--stride", 1), "padding": _padding(padding),
                "dilation": _ints(dilation, "--dilation", 1)}
    params = {"size": size, "sigma": sigma, "sigma2": sigma2, "amount": amount, "angle": angle}
    resolved = _run(lambda: resolve_steps(kernels, **params))
    steps = [_run(lambda k=k: adjust_kernel(k, normalize=normalize, scale=scale)) for _, k in resolved]
    if not (normalize or scale is not None or quiet):
        for spec, (name, k) in zip(kernels, resolved):  # a kernel of one's own that will wash the image out
            own = name == "custom" or kernel_file(spec) is not None
            total = 0.0 if isinstance(k, Magnitude) else float(k.sum())
            if own and abs(total) > 1e-6 * float(abs(k).max()) and abs(total - 1) > 1e-6:
                click.echo(f"cnnfilter: warning: kernel {spec.strip()[:60]!r} sums to {total:g}, not 0 or 1: "
                           "results may saturate (--normalize divides by the sum; --scale sets a factor)", err=True)
    label = "-".join(name for name, _ in resolved)
    spec = _run(lambda: FilterSpec(tuple(steps), flip=flip, border=border, cval=cval, method=method, bias=bias,
                                   output_range=output_range, gray=gray, alpha=alpha_mode, depth=depth, **geometry))
    work = functools.partial(process_file, spec=spec, save=SaveSpec(fmt, quality, compress_level),
                             raw=_raw(raw, images))
    files = [f for f in map(kernel_file, kernels) if f is not None]
    _process(images, output, label, work, fmt, quiet, raw=raw, other_inputs=files, quality=quality, **batch_opts)


@cli.command("kernels", context_settings=_CONTEXT)
@click.argument("name", required=False)
@_kernel_params
def kernels_command(name, size, sigma, sigma2, amount, angle):
    """List the named kernels, or print one as a matrix.

    A kernel step can carry its own options, so that each kernel of a chain has its own:
    NAME:KEY=VALUE,... with keys size, sigma, sigma2, amount, angle (gaussian:sigma=1.5, motion:size=9,angle=30),
    or ImageMagick's geometry: Gaussian:RADIUSxSIGMA, Blur:RADIUSxSIGMA (a Gaussian, as ImageMagick's Blur),
    LoG:RADIUSxSIGMA, DoG:RADIUS,SIGMA1,SIGMA2 (radius 0: the sigma chooses the size; else 2*RADIUS+1). The
    global --size, --sigma, ... go to the sized kernels that take them.

    \b
    Examples:
      cnnfilter kernels                         # name, size, sum, description
      cnnfilter kernels sharpen
      cnnfilter kernels gaussian --size 5 --sigma 1.2
      cnnfilter kernels gaussian:sigma=1.2
      cnnfilter kernels LoG:0x1.4
    """
    from .kernels import describe_kernel, kernel_table

    params = {"size": size, "sigma": sigma, "sigma2": sigma2, "amount": amount, "angle": angle}
    if name is None:
        if any(v is not None for v in params.values()):
            raise click.UsageError("--size, --sigma, ... need a kernel NAME")
        click.echo(kernel_table())
        return
    click.echo(_run(lambda: describe_kernel(name, **params)))


@cli.command(context_settings=_CONTEXT)
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@click.option("--size", default="2", show_default=True, metavar="N|R,C", help="Window size.")
@click.option("--stride", metavar="N|R,C", help="Step between windows [default: the window size].")
@click.option("--padding", default="0", show_default=True, metavar="N|PH,PW|T,B,L,R",
              help="Implicit padding, at most half the window.")
@click.option("--mode", type=click.Choice(("max", "avg", "min")), default="max", show_default=True)
@click.option("--ceil-mode", is_flag=True, help="Round the output size up (PyTorch's ceil_mode).")
@click.option("--exclude-pad", is_flag=True, help="avg: divide by the real pixels only, not the padded window.")
@_common_output
@_batch_options
def pool(images, size, stride, padding, mode, ceil_mode, exclude_pad, output, fmt, quiet, quality, compress_level, raw,
         **batch_opts):
    """Downsample images with max, average or min pooling.

    Each output pixel is the max / mean / min of a window; windows step by --stride (default: the window, so
    they do not overlap). Alpha is pooled the same way. Inputs, outputs and batches as for convolve.

    \b
    Examples:
      cnnfilter pool photo.png                      # 2x2 max -> photo.max2.png
      cnnfilter pool photo.png --size 3 --stride 2 --mode avg -o small.png
      cnnfilter pool photo.png --size 2 --padding 1 --ceil-mode
      cnnfilter pool photos/*.jpg --mode avg -o thumbs/
    """
    from .io import SaveSpec
    from .ops import PoolSpec, process_file

    win = _ints(size, "--size", 1)
    spec = _run(lambda: PoolSpec(win, None if stride is None else _ints(stride, "--stride", 1),
                                 _padding(padding, words=False), mode, ceil_mode, not exclude_pad))
    work = functools.partial(process_file, spec=spec, save=SaveSpec(fmt, quality, compress_level),
                             raw=_raw(raw, images))
    _process(images, output, spec.label, work, fmt, quiet, raw=raw, quality=quality, **batch_opts)


def _register() -> None:
    from .cli_nn import featuremaps_command, predict, train_tiny

    cli.add_command(train_tiny)
    cli.add_command(predict)
    cli.add_command(featuremaps_command)


_register()


def main() -> None:
    cli()
