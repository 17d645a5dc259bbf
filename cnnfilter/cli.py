"""The ``cnnfilter`` command: parse, call one library function, report. No arithmetic here.

Exit codes: 0 success, 1 failure (unreadable input, unwritable output), 2 usage error (bad option or value).
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
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
        try:
            code = super().main(args, prog_name or "cnnfilter", standalone_mode=False, **extra)
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
        except Exception as exc:  # a bug: say so in one line unless debugging
            if debug:
                raise
            click.echo(f"cnnfilter: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                       err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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


def _output_path(image: str, output: str | None, label: str) -> str:
    if output is not None:
        if output != "-" and image != "-" and Path(output).resolve() == Path(image).resolve():
            raise click.UsageError(f"output {output!r} is the input image; cnnfilter never overwrites its input")
        return output
    if image == "-":
        raise click.UsageError("reading standard input needs -o/--output (a file, or - for standard output)")
    src = Path(image)
    return str(src.with_name(f"{src.stem}.{label}.png"))


def _run(fn):
    """Call the library; map its errors to exit codes (ValueError/TypeError: usage, 2; I/O: failure, 1)."""
    from .io import ImageReadError, ImageWriteError

    try:
        return fn()
    except (ImageReadError, ImageWriteError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc


def _report(quiet: bool, target: str, pic) -> None:
    if not quiet and target != "-":
        h, w = pic.pixels.shape[:2]
        click.echo(f"wrote {target} ({w}x{h} {pic.mode}, {pic.depth}-bit)", err=True)


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
    """


def _common_output(fn):
    fn = click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")(fn)
    fn = click.option("-f", "--format", "fmt", metavar="FMT",
                      help="Output format (png, jpeg, tiff, ...); default from the output suffix, PNG for -o -.")(fn)
    fn = click.option("-o", "--output", metavar="PATH",
                      help="Output file, or - for standard output. Default: IMAGE-STEM.LABEL.png next to IMAGE.")(fn)
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
@click.argument("image", metavar="IMAGE")
@click.option("-k", "--kernel", "kernels", multiple=True, required=True, metavar="KERNEL",
              help="A name (cnnfilter kernels), a matrix '0,-1,0;-1,5,-1;0,-1,0', ImageMagick's '3x3: 0,-1,0 ...', "
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
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True, help="Algorithm.")
@_common_output
def convolve(image, kernels, size, sigma, sigma2, amount, angle, normalize, scale, bias, output_range, stride,
             padding, dilation, border, cval, flip, method, output, fmt, quiet):
    """Filter IMAGE with one or more kernels and write the result.

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
      cnnfilter convolve photo.png -k laplacian --output-range offset
      cat a.png | cnnfilter convolve - -k edge -o - > b.png
    """
    from .io import check_target, read_picture, write_picture
    from .kernels import adjust_kernel, resolve_kernel
    from .ops import filter_picture

    geometry = {"stride": _ints(stride, "--stride", 1), "padding": _padding(padding),
                "dilation": _ints(dilation, "--dilation", 1)}
    params = {"size": size, "sigma": sigma, "sigma2": sigma2, "amount": amount, "angle": angle}
    resolved = [_run(lambda s=spec: resolve_kernel(s, **params)) for spec in kernels]
    steps = [_run(lambda k=k: adjust_kernel(k, normalize=normalize, scale=scale)) for _, k in resolved]
    label = "-".join(name for name, _ in resolved)
    target = _output_path(image, output, label)
    _run(lambda: check_target(target, fmt))
    pic = _run(lambda: read_picture(image))
    result = _run(lambda: filter_picture(pic, steps, flip=flip, border=border, cval=cval, method=method, bias=bias,
                                         output_range=output_range, **geometry))
    _run(lambda: write_picture(result, target, fmt=fmt))
    _report(quiet, target, result)


@cli.command("kernels", context_settings=_CONTEXT)
@click.argument("name", required=False)
@_kernel_params
def kernels_command(name, size, sigma, sigma2, amount, angle):
    """List the named kernels, or print one as a matrix.

    \b
    Examples:
      cnnfilter kernels                         # name, size, sum, description
      cnnfilter kernels sharpen
      cnnfilter kernels gaussian --size 5 --sigma 1.2
      cnnfilter kernels log --sigma 1.4
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
@click.argument("image", metavar="IMAGE")
@click.option("--size", default="2", show_default=True, metavar="N|R,C", help="Window size.")
@click.option("--stride", metavar="N|R,C", help="Step between windows [default: the window size].")
@click.option("--padding", default="0", show_default=True, metavar="N|PH,PW|T,B,L,R",
              help="Implicit padding, at most half the window.")
@click.option("--mode", type=click.Choice(("max", "avg", "min")), default="max", show_default=True)
@click.option("--ceil-mode", is_flag=True, help="Round the output size up (PyTorch's ceil_mode).")
@click.option("--exclude-pad", is_flag=True, help="avg: divide by the real pixels only, not the padded window.")
@_common_output
def pool(image, size, stride, padding, mode, ceil_mode, exclude_pad, output, fmt, quiet):
    """Downsample IMAGE with max, average or min pooling.

    Each output pixel is the max / mean / min of a window; windows step by --stride (default: the window, so
    they do not overlap). Alpha is pooled the same way.

    \b
    Examples:
      cnnfilter pool photo.png                      # 2x2 max -> photo.max2.png
      cnnfilter pool photo.png --size 3 --stride 2 --mode avg -o small.png
      cnnfilter pool photo.png --size 2 --padding 1 --ceil-mode
    """
    from .io import check_target, read_picture, write_picture
    from .ops import pool_picture

    win = _ints(size, "--size", 1)
    kwargs = {"stride": None if stride is None else _ints(stride, "--stride", 1),
              "padding": _padding(padding, words=False), "mode": mode, "ceil_mode": ceil_mode,
              "count_include_pad": not exclude_pad}
    label = f"{mode}{win if isinstance(win, int) else 'x'.join(map(str, win))}"
    target = _output_path(image, output, label)
    _run(lambda: check_target(target, fmt))
    pic = _run(lambda: read_picture(image))
    result = _run(lambda: pool_picture(pic, win, **kwargs))
    _run(lambda: write_picture(result, target, fmt=fmt))
    _report(quiet, target, result)


def main() -> None:
    cli()
