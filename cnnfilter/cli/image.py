"""``cnnfilter convolve``, ``pool`` and ``kernels``: options in, a :class:`~cnnfilter.ops.FilterSpec` or
:class:`~cnnfilter.ops.PoolSpec` and a :class:`~cnnfilter.batch.Request` out; the library plans and runs the work,
this module reports it."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .base import (CONTEXT, Command, ProgressBar, call, cli, double_star_hint, ints, padding, section, shown,
                   size_option, summary, warn)

BORDERS = ("constant", "edge", "reflect", "symmetric", "wrap")
METHODS = ("auto", "direct", "separable", "fft")


def output_options(fn):
    """Where and how results are written (convolve, pool)."""
    return section(
        "Output",
        click.option("-o", "--output", metavar="PATH",
                     help="Output file, folder (several inputs), or - for standard output. Default: "
                          "IMAGE-STEM.LABEL.EXT next to each input."),
        click.option("-f", "--format", "fmt", metavar="FMT",
                     help="Output format (png, jpeg, tiff, ...); default: the -o suffix, else each input's own "
                          "format (PNG when Pillow cannot write it)."),
        click.option("--quality", type=click.IntRange(1, 100), metavar="1-100",
                     help="JPEG/WebP quality [default: a JPEG input's own tables, else 90]."),
        click.option("--compress-level", type=click.IntRange(0, 9), metavar="0-9",
                     help="PNG zlib level [default: 1, fast (run-length, as OpenCV); 6 is Pillow's default, 9 the "
                          "smallest]."),
        click.option("--raw", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Also write the unrounded float32 result (.npy, .npz, or .tif for greyscale)."),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing on success."),
    )(fn)


def batch_options(fn):
    """Options of the commands that take many images: naming, overwriting, parallelism, failures, limits."""
    return section(
        "Batch",
        click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders (and ** in globs)."),
        click.option("--name", "template", metavar="TEMPLATE",
                     help="Output name from {stem} {name} {kernel} {ext} [default: {stem}.{kernel}.{ext}]."),
        click.option("--suffix", metavar="TEXT", help="Output name STEM+TEXT.EXT (e.g. --suffix _edges)."),
        click.option("--overwrite", is_flag=True, help="Replace outputs that exist."),
        click.option("--skip-existing", is_flag=True, help="Leave outputs that exist alone (resume a batch)."),
        click.option("--in-place", is_flag=True, help="Write each result over its input (same name and format)."),
        click.option("-j", "--jobs", type=click.IntRange(1), metavar="N",
                     help="Worker processes for several files [default: all cores]."),
        click.option("--scheduler", metavar="local:N|tcp://HOST:PORT",
                     help="Run a batch on Dask: N worker processes here, or an existing cluster (inputs and outputs "
                          "must be paths its workers see)."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails."),
        click.option("--max-memory", metavar="SIZE", callback=size_option,
                     help="Refuse work that would need more memory, shared by the workers "
                          "[default: half the RAM; CNNFILTER_MAX_MEMORY]."),
        click.option("--max-pixels", type=click.IntRange(1), metavar="N",
                     help="Refuse images with more pixels (decompression bombs) [default: Pillow's limit, "
                          "89478485]."),
    )(fn)


def stream_options(fn):
    """--tile: images larger than memory (convolve, pool)."""
    return section(
        "Large images",
        click.option("--tile", type=click.IntRange(0), metavar="N",
                     help="Stream a TIFF in NxN tiles (a multiple of 16) into a tiled BigTIFF; 0: never stream "
                          "[default: TIFFs over 256 MiB decoded stream in 1024x1024 tiles]."),
    )(fn)


def kernel_params(fn):
    """--size, --sigma, --sigma2, --amount, --angle: parameters of the sized kernels (convolve, kernels)."""
    return section(
        "Kernel",
        click.option("--size", type=click.IntRange(1, 255), help="Size of a sized kernel (box, gaussian, ...)."),
        click.option("--sigma", type=click.FloatRange(0, min_open=True), help="Sigma of gaussian, log, dog, unsharp."),
        click.option("--sigma2", type=click.FloatRange(0, min_open=True), help="Second sigma of dog (1.6 sigma)."),
        click.option("--amount", type=float, help="Strength of the unsharp kernel (default 1)."),
        click.option("--angle", type=float, help="Angle in degrees of the motion kernel (default 0)."),
    )(fn)


def _raw(raw: str | None, images) -> str | None:
    from ..batch import many

    if raw is not None and many(images):
        raise click.UsageError("--raw writes one file: give a single input image")
    if raw is not None:
        from ..io import RAW_SUFFIXES

        if Path(raw).suffix.lower() not in RAW_SUFFIXES:
            raise click.UsageError(f"--raw {raw!r}: use one of {', '.join(RAW_SUFFIXES)}")
    return raw


def _streaming(tile: int | None, max_pixels: int | None):
    from ..stream import Streaming

    return call(lambda: Streaming(tile, max_pixels=max_pixels))


def _process(request, work, *, quiet, jobs, fail_fast, max_pixels, max_memory, scheduler) -> None:
    """Plan ``request`` (the library checks it whole before any work), run ``work(source, target)`` for each job
    (one file here, many in worker processes) and report: one line per file for one file, one summary line and
    every failure for a batch; exit code 1 when any failed."""
    from .. import batch
    from ..limits import max_jobs
    from ..limits import max_memory as default_memory

    double_star_hint(request.images, request.recursive, quiet)
    if request.output == "-" and sys.stdout is not None and sys.stdout.isatty():  # as export: no image on a terminal
        raise click.UsageError("-o -: standard output is a terminal; redirect it to a file or a pipe")
    plan = call(lambda: batch.prepare(request))
    if not plan.many:
        item = plan.items[0] if plan.items else None
        if item is None:
            raise click.ClickException(f"no images found in {', '.join(map(repr, request.images))}")
        if isinstance(item, batch.Result):  # skipped: the output exists
            if not quiet:
                click.echo(f"skipped {shown(item.target)}: it exists", err=True)
            return
        stream = work.keywords.get("stream") if isinstance(work, functools.partial) else None
        with batch.Settings(max_pixels, max_memory).applied(), ProgressBar(
                not quiet and sys.stderr.isatty() and stream is not None, None, "tiles") as advance:
            if stream is not None:  # a TIFF that streams counts its tiles
                from dataclasses import replace

                work = functools.partial(work, stream=replace(stream, progress=advance))
            call(lambda: work(item.source, item.target))
        if not quiet and item.target != "-":
            click.echo(f"wrote {shown(item.target)}", err=True)
        return
    count = sum(isinstance(j, batch.Job) for j in plan.items)
    exact = getattr(getattr(work, "keywords", {}).get("spec"), "exact", False)
    if scheduler is not None:  # a Dask cluster: here (local:N) or elsewhere, each worker its own memory
        from .. import cluster

        if jobs is not None:
            raise click.UsageError("-j sets this machine's worker processes; with --scheduler, local:N does")

        address = call(lambda: cluster.check_address(scheduler))
        workers = int(address.split(":")[1]) if address.startswith("local:") else None
        budget = max_memory if workers is None else (max_memory or default_memory()) // workers
        settings = batch.Settings(max_pixels, budget, batch.engine_for(count, workers or 1, exact=exact))
        runner = cluster.DaskRunner(address, settings, chunk=cluster.chunk_size(count, workers))
    else:
        processes = min(jobs or batch.default_jobs(), max_jobs())
        if jobs is not None and jobs > processes and not quiet:
            warn(f"-j {jobs} is more than {processes} (4 per core); using {processes}")
        budget = (max_memory or default_memory()) // max(processes, 1)
        settings = batch.Settings(max_pixels, budget, batch.engine_for(count, processes, exact=exact))
        runner = batch.ProcessPool(processes, settings, chunk=batch.chunk_size(count, processes))
    counts = {"done": 0, "skipped": 0, "ignored": 0, "failed": 0}
    failures = []

    def consume():  # a cluster that cannot be started or reached fails here, as one line
        with ProgressBar(not quiet and sys.stderr.isatty(), len(plan.items)) as advance:
            for res in runner.run(plan.items, work, fail_fast=fail_fast):
                counts[res.status] += 1
                if res.status == "failed":
                    failures.append(res)
                advance()

    call(consume)
    if failures or not quiet:
        words = {"skipped": "skipped (outputs exist; --overwrite replaces them)",
                 "ignored": "ignored (named like this command's outputs)"}
        if request.in_place:  # never skipped for existing: only a file already replaced, or changed meanwhile
            words["skipped"] = "skipped (already replaced by a worker that died, or changed during the batch)"
        left = len(plan.items) - sum(counts.values())
        stopped = ""
        if fail_fast and failures and left > 0:
            stopped = f"; stopped at the first failure (--fail-fast), {left} not run"
        summary(counts, [(res.source, res.message) for res in failures], words, stopped)
    if failures:
        sys.exit(1)


def _request(images, label, output, fmt, quality, raw, other_inputs=(), **batch_opts):
    """A :class:`~cnnfilter.batch.Request` and the run options, from a command's parameters."""
    from ..batch import Request

    run_opts = {k: batch_opts.pop(k) for k in ("jobs", "fail_fast", "max_pixels", "max_memory", "scheduler")}
    req = Request(tuple(images), label, output=output, fmt=fmt, quality=quality, raw=raw,
                  other_inputs=tuple(other_inputs), **batch_opts)
    return req, run_opts


@cli.command(cls=Command, context_settings=CONTEXT)
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@section(
    "Kernel",
    click.option("-k", "--kernel", "kernels", multiple=True, required=True, metavar="KERNEL",
                 help="A name (cnnfilter kernels), a name with its own options 'gaussian:sigma=1.5' or ImageMagick's "
                      "'Gaussian:0x2', a matrix '0,-1,0;-1,5,-1;0,-1,0', ImageMagick's '3x3: 0,-1,0 ...', "
                      "or a .txt/.csv/.npy/.json file. Repeat to chain."),
    click.option("--normalize", is_flag=True, help="Divide each kernel by its sum (an error when it sums to 0)."),
    click.option("--scale", type=float, help="Multiply each kernel by this (ImageMagick's convolve:scale)."),
    click.option("--flip", is_flag=True, help="True convolution (ImageMagick's Convolve): flip the kernel first."),
    click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True, help="Algorithm."),
)
@kernel_params
@section(
    "Geometry",
    click.option("--stride", default="1", show_default=True, metavar="N|R,C", help="Step between windows."),
    click.option("--padding", "padding_text", default="same", show_default=True, metavar="MODE|N|PH,PW|T,B,L,R",
                 help="same, valid, full, or explicit pixel counts."),
    click.option("--dilation", default="1", show_default=True, metavar="N|R,C", help="Spacing between kernel taps."),
    click.option("--border", type=click.Choice(BORDERS), default="reflect", show_default=True,
                 help="How padded pixels are made (numpy.pad's names; reflect is OpenCV's default, "
                      "constant with --cval 0 is zero padding)."),
    click.option("--cval", type=float, default=0.0, show_default=True,
                 help="Value of padded pixels for --border constant."),
)
@section(
    "Pixels",
    click.option("--bias", default="0", show_default=True, metavar="V|P%",
                 help="Add to the result: a value, or a percentage of the full range (ImageMagick's -bias)."),
    click.option("--output-range", type=click.Choice(("clip", "abs", "normalize", "offset")),
                 help="How signed results become pixels [default: abs for kernels summing to 0, else clip]."),
    click.option("--gray", is_flag=True, help="Convert to greyscale (ITU-R 601 luma) before filtering."),
    click.option("--alpha", "alpha_mode", type=click.Choice(("keep", "filter")), default="keep", show_default=True,
                 help="keep: alpha passes through; filter: filter it too, colour weighted by alpha (no dark halos)."),
    click.option("--depth", type=click.Choice(("8", "16")), callback=lambda c, p, v: v and int(v),
                 help="Bits per sample of the output [default: the input's]; 8-bit values are scaled by 257 to 16."),
)
@output_options
@stream_options
@batch_options
def convolve(images, kernels, normalize, scale, flip, method, size, sigma, sigma2, amount, angle, stride,
             padding_text, dilation, border, cval, bias, output_range, gray, alpha_mode, depth, output, fmt, quality,
             compress_level, raw, quiet, tile, **batch_opts):
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
      cnnfilter convolve /shared/photos -r -k edge -o /shared/edges --scheduler tcp://10.0.0.5:8786
      cnnfilter convolve scan.tif -k gaussian --sigma 2 --tile 1024   # larger than memory: streamed
    """
    from ..io import SaveSpec
    from ..kernels import Magnitude, adjust_kernel, kernel_file, resolve_steps
    from ..ops import FilterSpec, parse_bias, process_file

    call(lambda: parse_bias(bias, 16))  # a bad --bias is a usage error before any file is read

    geometry = {"stride": ints(stride, "--stride", 1), "padding": padding(padding_text),
                "dilation": ints(dilation, "--dilation", 1)}
    params = {"size": size, "sigma": sigma, "sigma2": sigma2, "amount": amount, "angle": angle}
    resolved = call(lambda: resolve_steps(kernels, **params))
    steps = [call(lambda k=k: adjust_kernel(k, normalize=normalize, scale=scale)) for _, k in resolved]
    if not (normalize or scale is not None or quiet):
        for spec, (name, k) in zip(kernels, resolved):  # a kernel of one's own that will wash the image out
            own = name == "custom" or kernel_file(spec) is not None
            total = 0.0 if isinstance(k, Magnitude) else float(k.sum())
            if own and abs(total) > 1e-6 * float(abs(k).max()) and abs(total - 1) > 1e-6:
                warn(f"kernel {spec.strip()[:60]!r} sums to {total:g}, not 0 or 1: results may saturate "
                     "(--normalize divides by the sum; --scale sets a factor)")
    label = "-".join(name for name, _ in resolved)
    spec = call(lambda: FilterSpec(tuple(steps), flip=flip, border=border, cval=cval, method=method, bias=bias,
                                   output_range=output_range, gray=gray, alpha=alpha_mode, depth=depth, **geometry))
    work = functools.partial(process_file, spec=spec, save=SaveSpec(fmt, quality, compress_level),
                             raw=_raw(raw, images), stream=_streaming(tile, batch_opts["max_pixels"]))
    files = [f for f in map(kernel_file, kernels) if f is not None]
    req, run_opts = _request(images, label, output, fmt, quality, raw, files, **batch_opts)
    _process(req, work, quiet=quiet, **run_opts)


@cli.command("kernels", cls=Command, context_settings=CONTEXT)
@click.argument("name", required=False)
@kernel_params
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
    from ..kernels import describe_kernel, kernel_table

    params = {"size": size, "sigma": sigma, "sigma2": sigma2, "amount": amount, "angle": angle}
    if name is None:
        if any(v is not None for v in params.values()):
            raise click.UsageError("--size, --sigma, ... need a kernel NAME")
        click.echo(kernel_table())
        return
    click.echo(call(lambda: describe_kernel(name, **params)))


@cli.command(cls=Command, context_settings=CONTEXT)
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@section(
    "Window",
    click.option("--size", default="2", show_default=True, metavar="N|R,C", help="Window size."),
    click.option("--mode", type=click.Choice(("max", "avg", "min")), default="max", show_default=True),
    click.option("--exclude-pad", is_flag=True, help="avg: divide by the real pixels only, not the padded window."),
)
@section(
    "Geometry",
    click.option("--stride", metavar="N|R,C", help="Step between windows [default: the window size]."),
    click.option("--padding", "padding_text", default="0", show_default=True, metavar="N|PH,PW|T,B,L,R",
                 help="Implicit padding (any size while every window holds a pixel)."),
    click.option("--ceil-mode", is_flag=True, help="Round the output size up (PyTorch's ceil_mode)."),
)
@output_options
@stream_options
@batch_options
def pool(images, size, mode, exclude_pad, stride, padding_text, ceil_mode, output, fmt, quality, compress_level, raw,
         quiet, tile, **batch_opts):
    """Downsample images with max, average or min pooling.

    Each output pixel is the max / mean / min of a window; windows step by --stride (default: the window, so
    they do not overlap). Alpha is pooled the same way. Inputs, outputs and batches as for convolve.

    \b
    Examples:
      cnnfilter pool photo.png                      # 2x2 max -> photo.max2.png
      cnnfilter pool photo.png --size 3 --stride 2 --mode avg -o small.png
      cnnfilter pool photo.png --size 2 --padding 1 --ceil-mode
      cnnfilter pool photos/*.jpg --mode avg -o thumbs/
      cnnfilter pool slide.tif --size 4 --mode avg                   # a TIFF over 256 MiB streams in tiles
    """
    from ..io import SaveSpec
    from ..ops import PoolSpec, process_file

    win = ints(size, "--size", 1)
    spec = call(lambda: PoolSpec(win, None if stride is None else ints(stride, "--stride", 1),
                                 padding(padding_text, words=False), mode, ceil_mode, not exclude_pad))
    work = functools.partial(process_file, spec=spec, save=SaveSpec(fmt, quality, compress_level),
                             raw=_raw(raw, images), stream=_streaming(tile, batch_opts["max_pixels"]))
    req, run_opts = _request(images, spec.label, output, fmt, quality, raw, **batch_opts)
    _process(req, work, quiet=quiet, **run_opts)


