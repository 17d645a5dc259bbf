"""``cnnfilter train-tiny``, ``predict`` and ``featuremaps``: parse, call cnnfilter.nn and cnnfilter.maps, render.
No arithmetic here."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from .base import CONTEXT, ProgressBar, call, cli, double_star_hint, image_size, size_option, summary, warn

def _threads(jobs: int | None) -> None:
    if jobs is None:
        return
    import numba

    numba.set_num_threads(max(1, min(jobs, numba.config.NUMBA_NUM_THREADS)))


def _err() -> object:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)  # a message is one line, however long


@cli.command("train-tiny", context_settings=CONTEXT)
@click.argument("data", metavar="DATA", required=False, type=click.Path(file_okay=False))
@click.option("-o", "--output", metavar="MODEL", help="Model file to write (.cnnf).")
@click.option("--arch", metavar="ARCH", help="Architecture string; 'help' explains the grammar "
              "[default: LeNet-like, fitted to the input size].")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True),
              help="Learning rate [default: 0.002 adam, 0.05 sgd].")
@click.option("--optimizer", type=click.Choice(("adam", "sgd")), default="adam", show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True,
              help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seeds initialisation, split, shuffling.")
@click.option("--size", metavar="N|HxW", help="Resize every image to this [default: the most common size].")
@click.option("--channels", type=click.Choice(("1", "3")), default="1", show_default=True,
              help="Greyscale or RGB input.")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Fraction of each class held out for validation (stratified, seeded).")
@click.option("--val", "val_dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="A separate validation folder (same layout) instead of --val-split.")
@click.option("--augment", type=click.Choice(("affine", "affine-flip", "shift", "none")), default="affine",
              show_default=True, help="Each batch moved at random: affine shifts up to 10% of the size, rotates up "
              "to 15 degrees and zooms up to 10%; affine-flip also mirrors half the images (never for digits or "
              "text); shift only translates.")
@click.option("--schedule", type=click.Choice(("constant", "cosine")), default="constant", show_default=True,
              help="Learning rate over the epochs: constant, or cosine decay towards 0.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Target 1-s on the label and s/K on every class (PyTorch's label_smoothing).")
@click.option("--patience", type=click.IntRange(1), metavar="N",
              help="Stop when the validation accuracy has not improved for N epochs.")
@click.option("--no-best", "last", is_flag=True, help="Keep the last epoch, not the best by validation accuracy.")
@click.option("-j", "--jobs", type=click.IntRange(1), help="Threads for the compiled kernels [default: all cores].")
@click.option("--log", "log_path", metavar="CSV", help="Write per-epoch metrics to this CSV file.")
@click.option("--plot", "plot_path", metavar="PNG", help="Draw the loss and accuracy curves to this PNG.")
@click.option("--log-scale", is_flag=True, help="--plot draws the loss on a log scale.")
@click.option("--checkpoint", is_flag=True, help="Write the model file each time the validation accuracy "
              "improves (a run cut short leaves its best epoch).")
@click.option("--max-memory", default="2GiB", show_default=True, metavar="SIZE", callback=size_option,
              help="Refuse a dataset whose float32 array would be larger (the network's memory is checked too).")
@click.option("--max-pixels", type=click.IntRange(1), metavar="N",
              help="Skip images with more pixels (decompression bombs) [default: Pillow's limit, 89478485].")
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def train_tiny(data, output, arch, epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, size, channels,
               val_split, val_dir, augment, schedule, label_smoothing, patience, last, jobs, log_path, plot_path,
               log_scale, checkpoint, max_memory, max_pixels, overwrite, quiet):
    """Train a small CNN from scratch on a folder of labelled images.

    DATA holds one sub-folder of images per class (torchvision's ImageFolder layout). Images are converted to
    --channels, resized to --size, scaled to 0..1 and standardised with the training set's mean and std (kept in
    the model). Ctrl-C stops after writing the best model so far.

    \b
    Examples:
      cnnfilter train-tiny samples/digits -o digits.cnnf
      cnnfilter train-tiny samples/digits -o d.cnnf --arch c8k3p1-relu-max2-fc10 --epochs 10
      cnnfilter train-tiny photos/ -o m.cnnf --channels 3 --size 32x32 --augment shift --log m.csv --plot m.png
      cnnfilter train-tiny --arch help
    """
    from .. import nn
    from ..limits import printable

    if arch is not None and arch.strip().lower() == "help":
        click.echo(nn.ARCH_HELP)
        return
    if data is None:
        raise click.UsageError("missing DATA (a folder with one sub-folder of images per class)")
    if output is None:
        raise click.UsageError("missing -o/--output MODEL (the model file to write, e.g. model.cnnf)")
    explicit_split = click.get_current_context().get_parameter_source("val_split") != click.core.ParameterSource.DEFAULT
    if val_dir is not None and explicit_split:
        raise click.UsageError("--val and --val-split are two ways to choose validation data; give one")
    out = Path(output)
    # every file this command writes, checked before any work: never in the data, never another output, never
    # an existing file without --overwrite
    from ..outputs import OutputPolicy

    policy = OutputPolicy(overwrite=overwrite)
    for folder in (data, val_dir):
        try:
            files = [] if folder is None else nn.data.scan(folder)[1]
        except nn.DataError:
            files = []  # reported when the data is read
        for path, _ in files:
            call(lambda p=path: policy.add_input(p))
    call(lambda: policy.claim(output, "the model -o"))
    for opt, extra in (("--log", log_path), ("--plot", plot_path)):
        if extra:
            call(lambda o=opt, e=extra: policy.claim(e, o))
    hw = image_size(size)
    if arch is not None:
        call(lambda: nn.parse(arch))  # a typo fails before the data is read
    err = _err()
    say = (lambda *a, **k: None) if quiet else err.print
    start = time.perf_counter()
    from ..batch import pixel_limit

    with pixel_limit(max_pixels):
        prep = call(lambda: nn.prepare(data, channels=int(channels), size=hw, val_split=val_split,
                                       val=val_dir, seed=seed, max_memory=max_memory))
    for path, why in prep.skipped:
        click.echo(f"cnnfilter: warning: skipped {str(path)!r}: {printable(why)}", err=True)
    C, H, W = prep.input_shape
    arch = arch or nn.default_arch(H, W, len(prep.classes))
    rng = np.random.default_rng(seed)
    from ..limits import memory_limit

    with memory_limit(max(max_memory - prep.x.nbytes - (0 if prep.x_val is None else prep.x_val.nbytes), 0) // 2):
        net = call(lambda: nn.build(arch, prep.input_shape, len(prep.classes), rng=rng))
    n_val = 0 if prep.y_val is None else len(prep.y_val)
    say(f"data: {prep.total} images in {len(prep.classes)} classes, {C}x{H}x{W}; train {len(prep.y)}, "
        f"validation {n_val}" + (f"; {len(prep.skipped)} skipped" if prep.skipped else ""), markup=False)
    if not quiet:
        _summary(err, net)
    _threads(jobs)
    trainer = nn.Trainer(net, prep.x, prep.y, prep.x_val, prep.y_val, epochs=epochs, batch_size=batch_size,
                         optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, seed=seed,
                         augment=None if augment == "none" else augment, fill=prep.fill, schedule=schedule,
                         label_smoothing=label_smoothing, patience=patience)
    best = not last and n_val > 0  # the best validation epoch is kept (restored at the end)
    say(f"optimizer: {trainer.optimizer!r}, batch size {batch_size}, {epochs} epochs, seed {seed}", markup=False)
    say(f"recipe: augment {augment}, schedule {schedule}, label smoothing {label_smoothing:g}"
        + (f", patience {patience}" if patience else "") + f"; keeps the {'best' if best else 'last'} epoch",
        markup=False)

    def meta(final: bool) -> dict:
        from .. import __version__

        hist = trainer.history
        chosen = trainer.best_epoch if (best or not final) and trainer.best_params is not None else len(hist)
        ev = hist[chosen - 1] if hist else None
        return {"epochs": len(hist), "epoch_saved": chosen, "seed": seed, "optimizer": optimizer,
                "lr": trainer.base_lr, "batch_size": batch_size, "augment": augment, "schedule": schedule,
                "label_smoothing": label_smoothing, "weight_decay": weight_decay, "patience": patience,
                "stopped_early": trainer.stopped_early,
                "train_loss": ev and ev.train_loss, "train_acc": ev and ev.train_acc,
                "val_loss": ev and ev.val_loss, "val_acc": ev and ev.val_acc,
                "train_samples": len(prep.y), "val_samples": n_val, "data": str(data),
                "seconds": round(time.perf_counter() - start, 2), "cnnfilter": __version__}

    def save(use_best: bool, final: bool) -> None:
        current = [p.copy() for p in net.state()] if use_best else None
        if use_best:
            trainer.restore_best()
        model = nn.Model(net, prep.classes, prep.mean, prep.std, meta(final))
        call(lambda: nn.save_model(model, out))
        if current is not None:  # training goes on from where it was
            for p, c in zip(net.state(), current):
                p[...] = c

    bar = _Bar(show=not quiet and sys.stderr.isatty(), console=err)
    try:
        with bar:
            for ev in trainer.run():
                if isinstance(ev, nn.BatchEvent):
                    bar.update(ev)
                    continue
                val = "" if ev.val_acc is None else f"  val loss {ev.val_loss:.4f} acc {100 * ev.val_acc:5.1f}%"
                say(f"epoch {ev.epoch:{len(str(epochs))}d}/{epochs}  train loss {ev.train_loss:.4f} acc "
                    f"{100 * ev.train_acc:5.1f}%{val}  {ev.seconds:.2f} s" + ("  *" if ev.best and n_val else ""),
                    markup=False)
                if log_path:
                    call(lambda: _write_log(log_path, trainer.history))
                if checkpoint and ev.best:
                    save(use_best=False, final=False)
    except KeyboardInterrupt:
        done = len(trainer.history)
        if trainer.best_params is None:
            err.print(f"cnnfilter: interrupted in epoch {done + 1}, before any epoch finished; nothing written")
            sys.exit(130)
        save(use_best=True, final=False)
        if plot_path:
            call(lambda: nn.plot_curves(trainer.history, plot_path, log=log_scale))
        err.print(f"cnnfilter: interrupted after epoch {done}; wrote the best model so far (epoch "
                  f"{trainer.best_epoch}) to {output!r}", markup=False)
        sys.exit(130)
    except FloatingPointError as exc:
        raise click.ClickException(str(exc)) from exc
    use_best = best and trainer.best_params is not None
    save(use_best=use_best, final=True)
    if use_best:
        trainer.restore_best()  # the network in this process is the one written
    if plot_path:
        call(lambda: nn.plot_curves(trainer.history, plot_path, log=log_scale))
    kept = trainer.history[trainer.best_epoch - 1] if use_best else trainer.history[-1]
    acc = "" if kept.val_acc is None else f", validation accuracy {100 * kept.val_acc:.2f}%"
    stop = f" (stopped early: no better epoch in {patience})" if trainer.stopped_early else ""
    say(f"wrote {output!r}: epoch {kept.epoch}{'' if use_best else ' (the last)'}{acc}{stop}, "
        f"{time.perf_counter() - start:.1f} s in all", markup=False)


def _summary(err, net) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("layer", "left"), ("", "left"), ("output", "right"), ("parameters", "right")):
        table.add_column(col, justify=just)
    table.add_row("input", "", "x".join(map(str, net.input_shape)), "")
    for name, rep, shape, count in net.summary():
        table.add_row(name, rep, "x".join(map(str, shape)), f"{count:,}" if count else "")
    table.add_row("", "", "total", f"{net.count():,}")
    err.print(table)


def _write_log(path, history) -> None:
    from ..io import atomic_file

    lines = ["epoch,train_loss,train_acc,val_loss,val_acc,seconds"]
    fmt = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
    for e in history:
        lines.append(",".join([str(e.epoch), fmt(e.train_loss), fmt(e.train_acc), fmt(e.val_loss), fmt(e.val_acc),
                               f"{e.seconds:.3f}"]))
    with atomic_file(path) as fh:
        fh.write(("\n".join(lines) + "\n").encode())


class _Bar:
    """A transient rich progress bar for the batches of an epoch (batches, samples/s, running loss)."""

    def __init__(self, show: bool, console):
        self.show, self.console, self.task = show, console, None

    def __enter__(self):
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), console=self.console, transient=True)
            self.bar.start()
        return self

    def update(self, ev) -> None:
        if not self.show:
            return
        if self.task is None or ev.batch == 1:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {ev.epoch}/{ev.epochs}", total=ev.batches, info="")
        self.bar.update(self.task, completed=ev.batch,
                        info=f"{ev.samples_per_s:,.0f} samples/s  loss {ev.loss:.4f}")

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
        return False


_PRESETS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "none": ((0.0,), (1.0,))}


class _Preset(tuple):
    """A preset's values, in RGB order (reordered for a BGR network)."""


def _channel_values(ctx, param, value):
    """``--mean``/``--std``: numbers separated by commas (one, or one per channel, in the network's channel
    order), in 0..1 pixel units, or a preset name."""
    if value is None:
        return None
    key = value.strip().lower()
    if key in _PRESETS:
        return _Preset(_PRESETS[key][0 if param.name == "mean" else 1])
    try:
        values = tuple(float(v) for v in key.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not numbers separated by commas, 'imagenet' or 'none'") from None
    if not all(np.isfinite(values)) or (param.name == "std" and min(values) <= 0):
        raise click.BadParameter(f"{value!r}: the values must be finite" + (" and positive" if param.name == "std"
                                                                               else ""))
    if max(abs(v) for v in values) > 1:
        raise click.BadParameter(f"{value!r}: values are in 0..1 pixel units (for 0..255 values divide by 255: "
                                 f"{values[0]:g} is {values[0] / 255:.4g})")
    return values


def _input_size(ctx, param, value):
    try:
        return image_size(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param=param) from None


def model_options(f):
    """The options that say how an ONNX model is fed (a .cnnf model carries its own)."""
    options = [
        click.option("--input-size", metavar="HxW", callback=_input_size,
                     help="ONNX: the size to run a model whose height and width are symbolic at [default: each "
                          "image's own size; --list-layers shows 224x224]."),
        click.option("--mean", metavar="M1,M2,M3|imagenet|none", callback=_channel_values,
                     help="ONNX: per-channel mean in 0..1 units, in the network's channel order, subtracted from "
                          "the input (presets are RGB, reordered for --channels bgr) "
                          "[default: the model's metadata, else none]."),
        click.option("--std", metavar="S1,S2,S3|imagenet|none", callback=_channel_values,
                     help="ONNX: per-channel standard deviation the input is divided by "
                          "[default: the model's metadata, else none]."),
        click.option("--channels", type=click.Choice(("rgb", "bgr")),
                     help="ONNX: the colour order the network was trained on [default: rgb]."),
        click.option("--classes", "classes_file", metavar="FILE", type=click.Path(dir_okay=False),
                     help="ONNX: class names, one per line [default: the model's metadata, else indices]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load_model(spec, input_size=None, mean=None, std=None, channels=None, classes_file=None):
    """The model MODEL names (a .cnnf file, 'digits' or an .onnx file), fed as the ONNX options say."""
    source = _model_source(spec, input_size, mean, std, channels, classes_file)
    return call(source.open)


def _absolute(spec) -> str:
    """A file named on the command line as an absolute path (a cluster's workers run elsewhere); a name such as
    'digits' as it is."""
    return os.path.abspath(spec) if Path(spec).exists() else str(spec)


def _model_source(spec, input_size=None, mean=None, std=None, channels=None, classes_file=None):
    """How to open the model MODEL names, checked: a :class:`cnnfilter.nn.ModelSource`."""
    from .. import nn
    from ..nn.onnxfile import is_onnx, read_classes

    path = nn.resolve_model(spec)
    given = [n for n, v in (("--input-size", input_size), ("--mean", mean), ("--std", std),
                            ("--channels", channels), ("--classes", classes_file)) if v is not None]
    if not is_onnx(path):
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for ONNX models; a cnnfilter model carries its own "
                                   "input size, normalisation and classes")
        return nn.ModelSource(str(spec))
    classes = _usage(lambda: read_classes(classes_file)) if classes_file is not None else None
    if channels == "bgr":  # presets are RGB; numbers given are in the network's order already
        mean = tuple(reversed(mean)) if isinstance(mean, _Preset) and len(mean) == 3 else mean
        std = tuple(reversed(std)) if isinstance(std, _Preset) and len(std) == 3 else std
    plain = (lambda v: tuple(v) if isinstance(v, tuple) else v)  # a batch's workers need no CLI class to read it
    return nn.ModelSource(str(spec), input_size=input_size, mean=plain(mean), std=plain(std), channels=channels,
                          classes=None if classes is None else tuple(classes))


@cli.command("export", context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.option("-o", "--output", metavar="FILE", required=True, help="The .onnx file to write ('-': standard output).")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export_command(model, output, overwrite, quiet):
    """Write a model as ONNX, to run in onnxruntime, PyTorch or anywhere.

    MODEL is a model file written by train-tiny, or 'digits' for the bundled digits model. The ONNX file (opset
    17, checked by onnx.checker) keeps the layer names as tensor names, and the class names, normalisation (mean
    and std in 0..1 pixel units), architecture and training metadata as metadata_props. Needs
    pip install 'cnnfilter[onnx]'.

    \b
    Examples:
      cnnfilter export digits -o digits.onnx
      cnnfilter export model.cnnf -o model.onnx --overwrite
      cnnfilter featuremaps samples/digits/3/0003.png -m digits.onnx -o maps
    """
    from .. import nn
    from ..nn.onnxfile import is_onnx
    from ..outputs import quoted

    if is_onnx(nn.resolve_model(model)):
        raise click.UsageError(f"{model!r} is an ONNX file already")
    if output != "-":
        target = Path(output)
        if target.suffix.lower() != ".onnx":
            raise click.UsageError(f"-o {output!r}: an ONNX file ends in .onnx")
        if target.is_dir():
            raise click.UsageError(f"-o {output!r} is a folder")
        # the policy every command's outputs follow: never the input (exit 2), never an existing file without
        # --overwrite, a folder that exists and is writable (exit 1)
        from ..outputs import OutputPolicy

        policy = OutputPolicy(overwrite=overwrite)
        call(lambda: policy.add_input(nn.resolve_model(model)))
        call(lambda: policy.claim(output, "-o"))
    elif sys.stdout is None or sys.stdout.isatty():
        raise click.UsageError("-o -: standard output is a terminal (or closed); redirect it to a file")
    mdl = call(lambda: nn.load_model(nn.resolve_model(model)))
    call(lambda: nn.save_onnx(mdl, output))
    if not quiet and output != "-":
        click.echo(f"wrote {quoted(output)}", err=True)


@cli.command("predict", context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(1), default=3, show_default=True, help="How many classes to show.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout (one object per image), for scripts.")
@click.option("-q", "--quiet", is_flag=True, help="No table: one 'IMAGE CLASS PROBABILITY' line per image.")
@click.option("--errors", is_flag=True, help="With a folder of class sub-folders: list the misclassified files.")
@model_options
def predict(model, images, top_k, as_json, quiet, errors, input_size, mean, std, channels, classes_file):
    """Classify images with a trained model.

    MODEL is a model file written by train-tiny, 'digits' for the bundled digits model, or an ONNX file
    (.onnx, exported from PyTorch, Keras or Paddle; needs pip install 'cnnfilter[onnx]').
    IMAGE is a file, a folder of images, a glob ('photos/*.jpg', expanded as the image commands do), or a
    folder in the ImageFolder layout (one sub-folder per class): then the accuracy and a confusion matrix are
    printed instead (--errors lists the misclassified files; --json gives a line per image, then the summary).
    An image whose size or channels differ from the model's input is converted and resized, with one warning
    saying so. Unreadable files are reported; the exit code is 1 if any failed.

    \b
    Examples:
      cnnfilter predict digits samples/digits/3/0003.png
      cnnfilter predict model.cnnf 'photos/*.png' --top-k 1 --json
      cnnfilter predict digits samples/digits            # accuracy + confusion matrix
      cnnfilter predict digits samples/digits --errors   # and which files were wrong
      cnnfilter predict resnet18.onnx photo.jpg --mean imagenet --std imagenet --classes imagenet.txt
    """
    from ..limits import printable
    from ..nn.predict import probability_text

    if sys.stdout is None:
        raise click.ClickException("standard output is closed; predict prints its results there")
    mdl = _load_model(model, input_size, mean, std, channels, classes_file)
    if not mdl.classes:
        raise click.ClickException(f"{model!r}: the model's output is not one vector of class scores per image; "
                                   "featuremaps draws it")
    notes = _FitNotes(quiet or as_json)
    k = min(top_k, len(mdl.classes))
    if len(images) == 1 and Path(images[0]).is_dir() and any(
            p.is_dir() and not p.name.startswith(".") for p in Path(images[0]).iterdir()):
        _evaluate(mdl, images[0], as_json, errors, k, notes)
        return
    if errors:
        raise click.UsageError("--errors needs a folder of class sub-folders (the truth to compare with)")
    from ..batch import iter_sources

    files, failures = [], []  # failures: (source, why), reported at the end
    for src in iter_sources(images):  # files, folders and globs, as the image commands take them
        if getattr(src, "status", None) == "failed":
            failures.append((src.source, src.message))
        else:
            files.append(src.path)
    if not files and not failures:
        raise click.UsageError("no images found")
    unread = len(failures)  # found but not opened (a dangling link, an unreadable folder)
    rows = []
    try:
        for path, probs, error in _predictions(mdl, files, notes):
            if error is not None:
                failures.append((path, error))
                if as_json:
                    click.echo(json.dumps({"image": str(path), "error": error}))
                continue
            top = _top(mdl, probs, k)
            if as_json:
                click.echo(json.dumps({"image": str(path), **_json_top(top)}))
            elif quiet:
                click.echo(f"{printable(str(path))}\t{printable(top[0][0])}\t{probability_text(top[0][1], 4)}")
            else:
                rows.append((str(path), top))
                if len(rows) >= _TABLE_ROWS:  # memory stays bounded: the table is printed in pieces
                    _table(rows, k)
                    rows = []
    except click.ClickException:  # the model failed part-way: what was found so far is said before its line
        if rows:
            _table(rows, k)
        if failures:
            summary({"failed": len(failures)}, failures)
        raise
    if rows:
        _table(rows, k)
    notes.finish()
    if failures:
        if len(files) + unread > 1:  # a batch: one summary and every failure, as the image commands end
            summary({"done": len(files) + unread - len(failures), "failed": len(failures)}, failures)
        else:
            click.echo(f"cnnfilter: error: {printable(failures[0][1])}", err=True)
        sys.exit(1)


def _top(mdl, probs, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(mdl.classes[i], float(probs[i])) for i in order]


def _json_top(top) -> dict:
    """The prediction for --json: six significant digits, so a small probability is not 0."""
    def sig(p):
        return float(f"{p:.6g}")

    return {"class": top[0][0], "probability": sig(top[0][1]),
            "top": [{"class": c, "probability": sig(p)} for c, p in top]}


class _FitNotes:
    """One warning for each way images are converted or resized to meet the model's input (naming the first such
    image), and at the end how many more were treated the same way."""

    def __init__(self, quiet: bool):
        self.quiet, self.seen = quiet, {}

    def __call__(self, path, text: str) -> None:
        if text not in self.seen:
            self.seen[text] = 0
            if not self.quiet:
                from ..limits import printable

                warn(f"{printable(str(path))!r} is {text}")
        else:
            self.seen[text] += 1

    def finish(self) -> None:
        more = sum(self.seen.values())
        if more and not self.quiet:
            warn(f"{more} more image(s) converted or resized the same way")


_TABLE_ROWS = 1000


def _predictions(mdl, paths, notes=None):
    """``nn.predict_files``; a model that fails while it runs (an imported graph that does not take this batch,
    a limit) ends the command with one line, exit 1."""
    from .. import nn

    results = nn.predict_files(mdl, paths, notes=notes)
    while True:
        try:
            item = next(results)
        except StopIteration:
            return
        except ValueError as exc:
            raise click.ClickException(f"the model failed: {exc}") from exc
        yield item


def _table(rows, k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..limits import printable
    from ..nn.predict import probability_text

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    if k > 1:
        table.add_column("next")
    for name, top in rows:
        rest = ", ".join(f"{printable(c)} {probability_text(p)}" for c, p in top[1:])
        table.add_row(printable(name), printable(top[0][0]), probability_text(top[0][1]), *([rest] if k > 1 else []))
    Console(highlight=False, soft_wrap=True).print(table, markup=False)


_CONFUSION_CLASSES = 50  # a larger confusion matrix is no table a person reads (and n² cells)


def _wrong_table(wrong, count: int) -> None:
    """The misclassified files: image, true class, predicted class and its probability, the next guesses (whole
    paths, however wide: a list to act on)."""
    from rich.console import Console
    from rich.table import Table

    from ..limits import printable
    from ..nn.predict import probability_text

    widest = max((len(printable(name)) for name, _, _ in wrong), default=0)
    out = Console(highlight=False, soft_wrap=True, width=max(80, widest + 60))  # no path cut short

    if not wrong:
        out.print("misclassified: none", markup=False)
        return
    more = f" (the first {len(wrong)})" if count > len(wrong) else ""
    table = Table(title=f"misclassified: {count}{more}", box=None, pad_edge=False, header_style="bold",
                  title_justify="left")
    for name in ("image", "true", "predicted", "probability", "next"):
        table.add_column(name, justify="right" if name == "probability" else "left")
    for name, truth, top in wrong:
        rest = ", ".join(f"{printable(c)} {probability_text(p)}" for c, p in top[1:])
        table.add_row(printable(name), printable(truth), printable(top[0][0]), probability_text(top[0][1]), rest)
    out.print(table, markup=False)


def _evaluate(mdl, folder, as_json, errors: bool, k: int, notes) -> None:
    from .. import nn
    from ..limits import printable

    classes, items = call(lambda: nn.data.scan(folder))
    unknown = [c for c in classes if c not in mdl.classes]
    if unknown:
        shown = ", ".join(map(repr, mdl.classes[:20])) + (", ..." if len(mdl.classes) > 20 else "")
        raise click.UsageError(f"class folder(s) {', '.join(map(repr, unknown[:5]))} are not classes of the model "
                               f"({shown})")
    index = {c: mdl.classes.index(c) for c in classes}
    truth, pred, failed = [], [], 0
    paths = [p for p, _ in items]
    labels = {p: index[classes[label]] for p, label in items}
    wrong = []
    for path, probs, error in _predictions(mdl, paths, notes):
        if error is not None:
            failed += 1
            if as_json:
                click.echo(json.dumps({"image": str(path), "truth": mdl.classes[labels[path]], "error": error}))
            else:
                click.echo(f"cnnfilter: error: {printable(error)}", err=True)
            continue
        truth.append(labels[path])
        pred.append(int(np.argmax(probs)))
        top = _top(mdl, probs, k)
        if as_json and (not errors or truth[-1] != pred[-1]):
            click.echo(json.dumps({"image": str(path), "truth": mdl.classes[truth[-1]], **_json_top(top)}))
        elif errors and truth[-1] != pred[-1] and len(wrong) < _TABLE_ROWS:
            wrong.append((str(path), mdl.classes[truth[-1]], top))
    import collections

    n = len(mdl.classes)
    cells = collections.Counter(zip(truth, pred))  # the confusion matrix's non-zero cells: memory follows the data
    right = sum(v for (t, p), v in cells.items() if t == p)
    acc = right / max(len(truth), 1)
    dense = n <= _CONFUSION_CLASSES
    if as_json:
        conf = ([[cells.get((i, j), 0) for j in range(n)] for i in range(n)] if dense
                else [[t, p, v] for (t, p), v in sorted(cells.items())])
        click.echo(json.dumps({"accuracy": round(acc, 6), "images": len(truth), "failed": failed,
                               "wrong": len(truth) - right, "classes": mdl.classes, "confusion": conf}))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        out = Console(highlight=False)
        out.print(f"accuracy {100 * acc:.2f}% ({right} of {len(truth)} images)", markup=False)
        if not dense:
            out.print(f"{n} classes: the confusion matrix is drawn for at most {_CONFUSION_CLASSES}; --json gives its "
                      "non-zero cells as [true, predicted, count]", markup=False)
        else:
            table = Table(title="confusion matrix (rows: true class, columns: predicted)", box=None, pad_edge=False,
                          header_style="bold", title_justify="left")
            table.add_column("")
            for c in mdl.classes:
                table.add_column(escape(printable(c)), justify="right")
            table.add_column("recall", justify="right")
            for i, c in enumerate(mdl.classes):
                row = [cells.get((i, j), 0) for j in range(n)]
                total = sum(row)
                shown = [(f"[bold]{v}[/bold]" if i == j and v else (str(v) if v else "·")) for j, v in enumerate(row)]
                table.add_row(escape(printable(c)), *shown, f"{100 * row[i] / total:.1f}%" if total else "")
            out.print(table)
        if errors:
            _wrong_table(wrong, len(truth) - right)
    notes.finish()
    if failed:
        click.echo(f"cnnfilter: {failed} of {len(paths)} image(s) failed", err=True)
        sys.exit(1)



@cli.command("featuremaps", context_settings=CONTEXT)
@click.argument("images", metavar="IMAGE...", nargs=-1)
@click.option("-m", "--model", metavar="MODEL", help="A model file from train-tiny, 'digits' (the bundled one) or an "
              "ONNX file (.onnx). Without it, a bank of named kernels (--kernels) is shown.")
@click.option("-o", "--output", metavar="DIR", help="Folder for the results, one sub-folder per image "
              "[default: featuremaps].")
@click.option("--layers", metavar="NAMES|INDICES|OPS", help="Only these layers: names, indices or operator types, "
              "e.g. conv1,relu1 or 0,3 or Conv,Relu (see --list-layers).")
@click.option("--list-layers", is_flag=True, help="Print the model's layers and exit.")
@click.option("--kernels", "bank", metavar="K1,K2,...", help="Kernels of the bank, without -m "
              "[default: identity,sharpen,edge,laplacian,sobel-x,sobel-y,blur,emboss].")
@click.option("--resize", type=click.Choice(("stretch", "fit", "pad")), default="stretch", show_default=True,
              help="How an image meets the model's input size: stretch; fit (keep the aspect, pad); pad (no "
                   "scaling: centred on a black canvas, cropped when larger).")
@click.option("--normalize", type=click.Choice(("map", "layer", "none")), default="map", show_default=True,
              help="Colour range per channel, shared per layer, or raw values.")
@click.option("--colormap", "cmap", type=click.Choice(("gray", "viridis", "magma", "inferno", "coolwarm")),
              help="[default: coolwarm for signed maps, viridis for the others]")
@click.option("--tile-size", type=click.IntRange(8, 2048), metavar="PX",
              help="Upscale (nearest) each tile to about this many pixels [default: 96, 64 above 16 channels, 48 "
                   "above 64].")
@click.option("--separate", is_flag=True, help="Also one PNG per channel (channels/LAYER-C.png; a bank's maps at "
              "full resolution).")
@click.option("--npz", is_flag=True, help="Also the raw float32 activations of every layer, at full resolution "
              "(activations.npz).")
@click.option("--weights", "all_weights", is_flag=True, help="Draw every convolution's filters, not only the first's.")
@click.option("-r", "--recursive", is_flag=True, help="Look for images in sub-folders too.")
@click.option("--overwrite", is_flag=True, help="Replace results already in DIR.")
@click.option("--skip-existing", is_flag=True, help="Leave reports that exist alone (a folder run does this unless "
              "--overwrite; a single image's existing report is an error without it).")
@click.option("--max-memory", metavar="SIZE", callback=size_option,
              help="Refuse an image whose maps or montages would need more "
              "[default: half the RAM; CNNFILTER_MAX_MEMORY].")
@click.option("--scheduler", metavar="local:N|tcp://HOST:PORT",
              help="Draw the reports on Dask: N worker processes here, or an existing cluster (images, model and "
                   "DIR must be paths its workers see).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@model_options
def featuremaps_command(images, model, output, layers, list_layers, bank, resize, normalize, cmap, tile_size,
                        separate, npz, all_weights, recursive, overwrite, skip_existing, max_memory, scheduler, quiet,
                        input_size, mean, std, channels, classes_file):
    """Draw what a network, or a bank of kernels, sees in images.

    For each IMAGE (files, folders, globs), writes DIR/STEM/: a montage PNG per layer (every channel a tile, a
    colour bar below; a dense layer as a bar chart), the first convolution's filters, summary.json (per layer:
    shape, min, max, mean, fraction of zeros; the prediction) and index.html, which shows them in a browser with
    each layer's name, shape and how its colours map to values. A layer with negative values (before a ReLU) is
    drawn with a diverging colormap centred at 0. Without -m, a kernel bank on a photo: smoothing kernels' results
    in grey, edges and Laplacian on mid-grey at 0, a large photo reduced for display. Several images also get
    DIR/index.html linking every report. Unreadable images are reported and skipped; the exit code is 1 if any
    failed. Run again on a folder, it leaves the reports that exist alone (one summary line; --overwrite redraws
    them).

    \b
    Examples:
      cnnfilter featuremaps samples/digits/3/0003.png -m digits -o maps
      cnnfilter featuremaps -m digits --list-layers
      cnnfilter featuremaps photo.png -o maps                       # a kernel bank: edges, Sobel, Laplacian, ...
      cnnfilter featuremaps photo.png --kernels edge,sobel,laplacian -o maps --separate
      cnnfilter featuremaps digits/ -r -m model.cnnf --layers conv1,relu1 --npz -o maps
      cnnfilter featuremaps photo.jpg -m model.onnx --mean imagenet --std imagenet --layers Conv -o maps
      cnnfilter featuremaps scans/ -r -m model.onnx -o maps --scheduler local:4    # on Dask
    """
    from .. import maps as fm
    from ..batch import InProcess, Job, Result, Settings, iter_sources, many
    from ..limits import printable
    from ..outputs import OutputPolicy, about, quoted, resolve, safe_part

    source = None
    if model is not None:
        source = _model_source(model, input_size, mean, std, channels, classes_file)
        mdl = call(source.open)
    elif any(v is not None for v in (input_size, mean, std, channels, classes_file)):
        raise click.UsageError("--input-size, --mean, --std, --channels and --classes need -m/--model")
    if list_layers:
        if source is None:
            raise click.UsageError("--list-layers needs -m/--model")
        rows = mdl.net.summary()
        width = min(60, max([8, *(len(name) for name, *_ in rows)]))
        what = min(60, max([10, *(len(rep) for _, rep, *_ in rows)]))  # aligned, unless one is very long
        click.echo(f"{'':>3}  {'layer':{width}s} {'':{what}s} output")
        for i, (name, rep, shape, _) in enumerate(rows):
            click.echo(f"{i:>3}  {name:{width}s} {rep:{what}s} {'x'.join(map(str, shape))}")
        if mdl.free_size:
            _, h, w = mdl.input_shape
            click.echo(f"(shapes at {h}x{w}: the model's height and width are symbolic, so each image runs at its own "
                       "size; --input-size HxW fixes one)")
        return
    if not images:
        raise click.UsageError("missing IMAGE (a file, folder or glob)")
    if source is not None and bank is not None:
        raise click.UsageError("--kernels draws a kernel bank; with -m the model's own layers are drawn")
    if source is None and (layers is not None or all_weights or tile_size is not None):
        raise click.UsageError("--layers, --weights and --tile-size need -m/--model (a kernel bank's maps are "
                               "drawn at the photo's size)")
    from ..kernels import kernel_file

    names = [k.strip() for k in (bank or ",".join(fm.DEFAULT_BANK)).split(",") if k.strip()]
    if scheduler is not None:  # a cluster's workers run elsewhere: the files named here, as absolute paths
        from dataclasses import replace

        names = [_absolute(k) if kernel_file(k) is not None else k for k in names]
        source = None if source is None else replace(source, spec=_absolute(source.spec))
    report = call(lambda: _usage(lambda: fm.Report(source, layers=layers, bank=names, resize=resize,
                                                   normalize=normalize, colormap=cmap, tile_size=tile_size,
                                                   separate=separate, npz=npz, all_weights=all_weights)))
    out_root = Path(output or "featuremaps")
    if out_root.exists() and not out_root.is_dir():
        raise click.UsageError(f"-o {str(out_root)!r} is a file; featuremaps writes a folder")
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing contradict each other; give one")
    double_star_hint(images, recursive, quiet)
    sources = list(iter_sources(images, recursive=recursive, exclude=out_root))
    if sources and all(getattr(s, "usage", False) for s in sources):  # the command line contradicts itself
        raise click.UsageError(sources[0].message)
    # as convolve: a folder, a glob or several images is a batch, whose re-run leaves existing reports alone
    several = many(images)
    skip = skip_existing or (several and not overwrite)
    bank_files = [kernel_file(k) for k in (names if source is None else [])]
    policy = OutputPolicy(overwrite=overwrite, input_files={  # a report folder may hold none of them
        resolve(p) for p in [*(getattr(s, "path", None) for s in sources), model and Path(model), *bank_files]
        if p is not None and p.exists()})
    items, seen_stems = [], set()
    for src in sources:  # each image's folder, named and checked here; the reports are the runner's work
        path = getattr(src, "path", None)
        if getattr(src, "status", None) == "failed":
            items.append(src)
            continue
        stem = safe_part(path.stem)  # '..', '.', separators and control characters cannot name a folder
        rel = getattr(src, "rel", None)
        if rel is not None and rel.parent != Path("."):
            stem = str(Path(*[safe_part(p) for p in rel.parent.parts], stem))
        top = Path(stem).parts[0]
        if top.lower() == "index.html":  # DIR/index.html links a folder run's reports
            stem = str(Path(top + "_", *Path(stem).parts[1:]))
        while stem in seen_stems:
            stem += "_"
        seen_stems.add(stem)
        target = out_root / stem
        problem = policy.report_conflict(target, out_root)
        if problem is None:
            items.append(Job(path, target))
        elif problem.exists and skip:
            items.append(Result(path, target, "skipped", "report exists"))
        else:
            items.append(Result(path, target, "failed", str(problem)))
    if scheduler is not None:
        from .. import cluster

        runner = cluster.DaskRunner(call(lambda: cluster.check_address(scheduler)), Settings(None, max_memory),
                                    chunk=1)  # a report takes long enough to be a task of its own
    else:
        runner = InProcess(Settings(None, max_memory))
    work = functools.partial(fm.report_file, report=report)
    failures, done, skipped = [], [], []
    notes = _FitNotes(quiet)  # how images were converted or resized to meet the model's input, as predict says

    def consume():
        with ProgressBar(not quiet and sys.stderr.isatty(), len(items)) as advance:
            for res in runner.run(items, work):
                advance()
                if res.status == "failed":
                    failures.append((str(res.source), res.message))
                    continue
                if res.status == "skipped":
                    skipped.append(res)
                    continue
                done.append(res)
                if res.message:
                    notes(res.source, res.message)
                if not quiet:
                    click.echo(f"wrote {quoted(res.target / 'index.html')}", err=True)

    call(consume)
    notes.finish()
    index = None
    if len(items) > 1 and done:  # a page linking every image's report (an earlier run's too), in the inputs' order
        order = {str(getattr(it, "target", "")): i for i, it in enumerate(items)}
        linked = sorted(done + skipped, key=lambda r: order.get(str(r.target), len(order)))
        reports = [(Path(r.source).name, Path(os.path.relpath(os.path.abspath(r.target), os.path.abspath(out_root)))
                    .as_posix()) for r in linked]
        from ..outputs import WriteError

        try:
            index = fm.write_index(out_root, reports, [(quoted(n), printable(w)) for n, w in failures])
        except WriteError as exc:  # a failure of the run, reported with the images' own
            index = False
            click.echo(f"cnnfilter: error: {printable(str(exc))}", err=True)
        if index is None:
            warn(f"{quoted(out_root / 'index.html')} was not written by cnnfilter; left as it is")
        elif index and not quiet:
            click.echo(f"wrote {quoted(index)} (links {len(reports)} reports)", err=True)
    if len(items) > 1 and (failures or not quiet):  # a batch: one summary and every failure, as convolve's
        summary({"done": len(done), "skipped": len(skipped), "failed": len(failures)}, failures,
                {"skipped": "skipped (reports exist; --overwrite replaces them)"})
    else:
        if skipped and not quiet:
            click.echo("cnnfilter: 1 skipped (the report exists; --overwrite replaces it)", err=True)
        for name, why in failures:
            click.echo(f"cnnfilter: error: {about(name, printable(why))}", err=True)
    if failures:
        sys.exit(1)
    if index is False:
        sys.exit(1)
    if not done and not skipped:
        raise click.UsageError("no images found")


def _usage(fn):
    try:
        return fn()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
