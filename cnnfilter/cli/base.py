"""What every command shares: the group and its one-line errors, the mapping of library errors to exit codes,
option sections in ``--help``, value parsers and the progress bar. No command lives here, and no arithmetic.

Exit codes: 0 success, 1 failure (unreadable input, unwritable output), 2 usage error (bad option or value),
130 interrupted. Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import re
import sys
import time

import click

from .. import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Each command's module, attribute and one-line help: the group lists them without importing any (``--help``
# costs no more than importing click), and imports only the module of the command that runs.
COMMANDS = {
    "convolve": ("image", "convolve", "Filter images with one or more kernels and write the results."),
    "export": ("nn", "export_command", "Write a model as ONNX, to run in onnxruntime, PyTorch or anywhere."),
    "featuremaps": ("nn", "featuremaps_command", "Draw what a network, or a bank of kernels, sees in images."),
    "kernels": ("image", "kernels_command", "List the named kernels, or print one as a matrix."),
    "pool": ("image", "pool", "Downsample images with max, average or min pooling."),
    "predict": ("nn", "predict", "Classify images with a trained model."),
    "train-tiny": ("nn", "train_tiny", "Train a small CNN from scratch on a folder of labelled images."),
}


class Group(click.Group):
    """A group whose errors are one line, ``cnnfilter: error: ...``, with Click's exit codes, and whose commands
    load when they run (:data:`COMMANDS`)."""

    def list_commands(self, ctx):
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands:
            import importlib

            # the command's module registers it; an unknown name loads them all, so that Click's "Did you
            # mean" has every command to choose from
            modules = [COMMANDS[cmd_name][0]] if cmd_name in COMMANDS else sorted({m for m, _, _ in COMMANDS.values()})
            for module in modules:
                importlib.import_module(f"{__package__}.{module}")
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2] if name in COMMANDS else self.commands[name].get_short_help_str())
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


class Command(click.Command):
    """A command whose ``--help`` lists its options in sections (``Kernel``, ``Geometry``, ``Output``,
    ``Batch``, ...), as :func:`section` tags them."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "section", "Other options"), []).append(record)
        for name, rows in sorted(sections.items(), key=lambda kv: kv[0] == "Other options"):
            with formatter.section(name):
                formatter.write_dl(rows)


def section(name: str, *options):
    """A decorator applying Click ``options`` listed under ``name`` in a :class:`Command`'s help."""

    def apply(fn):
        for opt in reversed(options):
            fn = opt(fn)
        for param in fn.__click_params__[-len(options):]:
            param.section = name
        return fn

    return apply


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="cnnfilter")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
def cli(debug):
    """Image convolution, pooling and CNN feature maps.

    \b
    Examples:
      cnnfilter convolve photo.png -k edge
      cnnfilter convolve photo.png -k "0,-1,0;-1,5,-1;0,-1,0" -o sharp.png
      cnnfilter convolve photos/ -k sharpen             # every image, each in its own format
      cnnfilter pool photo.png --size 2 --mode avg
      cnnfilter kernels
      cnnfilter train-tiny samples/digits -o digits.cnnf
      cnnfilter predict digits samples/digits/3/0003.png
      cnnfilter featuremaps samples/digits/3/0003.png -m digits -o maps
    """


def call(fn):
    """Call the library; map its errors to exit codes: a command line that contradicts itself, a bad value or
    architecture, or a limit is a usage error (2); an unreadable input, an unwritable output, a bad data or model
    file, a cluster that cannot be reached is a failure (1)."""
    from ..io import ImageReadError, ImageWriteError
    from ..outputs import OutputError

    try:
        return fn()
    except OutputError as exc:
        raise (click.UsageError if exc.usage else click.ClickException)(str(exc)) from exc
    except (ImageReadError, ImageWriteError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        failure = isinstance(exc, _file_errors())
        raise (click.ClickException if failure else click.UsageError)(str(exc)) from exc
    except RuntimeError as exc:  # a Dask cluster that cannot be started or reached: the batch's failure
        cluster = sys.modules.get("cnnfilter.cluster")
        if cluster is None or not isinstance(exc, cluster.ClusterError):
            raise
        raise click.ClickException(str(exc)) from exc


def _file_errors() -> tuple:
    """The ValueErrors that name a bad file rather than a bad value: cnnfilter.nn's DataError and ModelError,
    when it is loaded (a command that never loaded it cannot have raised them)."""
    nn = sys.modules.get("cnnfilter.nn")
    return () if nn is None else (nn.DataError, nn.ModelError)


def warn(message: str) -> None:
    """One warning line on stderr."""
    click.echo(f"cnnfilter: warning: {message}", err=True)


def summary(counts: dict, failures, words: dict | None = None, tail: str = "") -> None:
    """The end of a batch on stderr, the same in every command: ``cnnfilter: 3 done, 1 skipped (why), 1 failed``
    (``done`` always, the other counts when not 0, ``words`` giving a status its longer name, ``tail`` appended),
    then one ``  failed: 'SOURCE': WHY`` line per failure (``failures``: ``(source, why)`` pairs)."""
    from ..limits import printable
    from ..outputs import quoted

    words = words or {}
    line = ", ".join(f"{n} {words.get(k, k)}" for k, n in counts.items() if n or k == "done")
    click.echo(f"cnnfilter: {line}{tail}", err=True)
    for source, why in failures:
        click.echo(f"  failed: {quoted(source)}: {printable(why)}", err=True)


def double_star_hint(images, recursive: bool, quiet: bool) -> None:
    """A glob with ``**`` and no ``-r`` matches one folder level (``**`` is ``*`` then, as in bash without
    globstar and in Python's glob): a user who meant every level is told, unless ``-q``."""
    if recursive or quiet:
        return
    for arg in images:
        if "**" in str(arg):
            warn(f"{str(arg)!r}: '**' matches one folder level without -r (--recursive)")


def ints(text: str, name: str, minimum: int):
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


def padding(text: str, *, words: bool = True):
    """``same``/``valid``/``full`` (with ``words``), ``N``, ``PH,PW`` or ``T,B,L,R``."""
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


def image_size(text: str | None):
    """``N`` or ``HxW`` as ``(H, W)``; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text.lower())
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise click.BadParameter(f"{text!r} is not N or HxW with positive sizes", param_hint="--size")
    h = int(m.group(1))
    return (h, int(m.group(2)) if m.group(2) else h)


def size_option(ctx, param, value):
    """A Click callback: ``2GiB``, ``500M``, ``1e9`` as bytes."""
    if value is None:
        return None
    from ..limits import parse_bytes

    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def shown(path) -> str:
    """A path for a message line: as it is when plain, quoted when it holds control characters."""
    from ..outputs import quoted

    text = str(path)
    return text if text.isprintable() else quoted(text)


class ProgressBar:
    """A rich progress bar on stderr (files or tiles done, per second, ETA), or nothing. The callable it gives
    advances by one, or with ``(done, total)`` sets both (a total known only once the work starts)."""

    def __init__(self, show: bool, total: int | None, unit: str = "files"):
        self.show, self.total, self.unit = show, total, unit

    def __enter__(self):
        if not self.show:
            return lambda done=None, total=None: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task(self.unit, total=self.total, rate="")
        start = time.monotonic()

        def advance(done=None, total=None):
            if done is None:
                self.bar.advance(task)
            else:
                self.bar.update(task, completed=done, total=total)
            done = self.bar.tasks[0].completed
            self.bar.update(task, rate=f"{done / max(time.monotonic() - start, 1e-9):.1f} {self.unit}/s")

        return advance

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
        return False


def _one_line_warnings() -> None:
    """Python warnings (a corrupt EXIF block, ...) as one line each, ``cnnfilter: warning: ...``, never a
    multi-line report with source paths."""
    import warnings

    from ..limits import shorten

    def show(message, category, filename, lineno, file=None, line=None):
        warn(shorten(str(message), 200))

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
    from ..limits import printable

    if isinstance(exc, MemoryError):
        return "out of memory (lower --max-memory, or give fewer or smaller inputs)"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    name = f": {printable(str(exc.filename))!r}" if getattr(exc, "filename", None) else ""
    return f"{printable(exc.strerror or str(exc))}{name}"
