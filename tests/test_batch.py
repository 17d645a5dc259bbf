"""Whole folders: input expansion, output naming, existing outputs, failures, parallel workers, bounded memory."""

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnfilter import batch
from cnnfilter.cli import cli
from cnnfilter.io import load_image, save_image


@pytest.fixture
def folder(tmp_path, rng):
    """A folder as people have them: good images of several kinds, and files that are not what they say."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    save_image(src / "grey.png", rng.integers(0, 256, (20, 16), np.uint8))
    save_image(src / "rgba.png", rng.integers(0, 256, (12, 14, 4), np.uint8))
    save_image(src / "deep.png", rng.integers(0, 65536, (10, 10), np.uint16))
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), np.uint8)).convert("P").save(src / "pal.gif")
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), np.uint8)).convert("CMYK").save(src / "cmyk.jpg")
    save_image(src / "sub" / "nested.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
    (src / "notes.png").write_text("a text file named .png")
    good = (src / "grey.png").read_bytes()
    (src / "sub" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "readme.txt").write_text("not an image suffix: ignored inside folders")
    return src


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_folder_recursive_keeps_relative_paths_and_reports_every_failure(folder, tmp_path):
    """-r -o DIR mirrors the tree; bad files are reported at the end and the exit code is 1."""
    out = tmp_path / "out"
    res = _run("convolve", folder, "-r", "-k", "sharpen", "-o", out, "-j", "1")
    assert res.exit_code == 1
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["cmyk.sharpen.jpg", "deep.sharpen.png", "grey.sharpen.png", "pal.sharpen.gif",
                    "rgba.sharpen.png", "sub/nested.sharpen.png"]  # each in its input's format
    assert [Image.open(out / n).format for n in ("cmyk.sharpen.jpg", "pal.sharpen.gif")] == ["JPEG", "GIF"]
    assert "cnnfilter: 6 done, 2 failed" in res.stderr
    assert f"failed: '{folder / 'notes.png'}': cannot read" in res.stderr
    assert f"failed: '{folder / 'sub' / 'truncated.png'}': cannot read" in res.stderr
    assert load_image(out / "deep.sharpen.png").dtype == np.uint16
    assert Image.open(out / "rgba.sharpen.png").mode == "RGBA"
    assert not list(out.rglob("*.part"))  # atomic writes leave no temporary files


def test_without_recursion_and_with_globs(folder, tmp_path):
    """A folder without -r takes its top level only; a glob takes what it matches; no match is a failure."""
    res = _run("pool", folder / "*.png", "-o", tmp_path / "g", "-j", "1", "-q")
    assert res.exit_code == 1  # notes.png matches the glob and is not an image
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["deep.max2.png", "grey.max2.png", "rgba.max2.png"]
    res = _run("pool", folder / "*.webp", "-o", tmp_path / "h", "-j", "1")
    assert res.exit_code == 1 and "no file matches" in res.stderr


def test_existing_outputs_are_skipped_in_batches_and_replaced_with_overwrite(folder, tmp_path):
    """A second run of a batch replaces nothing and says so in one line (--skip-existing says the same);
    --overwrite replaces; a single file's existing output is still an error."""
    out = tmp_path / "o"
    args = ["convolve", folder / "grey.png", folder / "rgba.png", "-k", "box", "-o", out, "-j", "1"]
    assert _run(*args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    for extra in ([], ["--skip-existing"]):
        res = _run(*args, *extra)
        assert res.exit_code == 0
        assert res.stderr.splitlines() == ["cnnfilter: 0 done, 2 skipped (outputs exist; --overwrite replaces them)"]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    res = _run(*args, "--overwrite")
    assert res.exit_code == 0 and "2 done" in res.stderr
    res = _run("convolve", folder / "grey.png", "-k", "box", "-o", out / "grey.box.png")
    assert res.exit_code == 1 and "exists; use --overwrite or --skip-existing" in res.stderr


@pytest.mark.parametrize("extra", [[], ["--suffix", "_edges"], ["--name", "{kernel}-{stem}.{ext}"], ["-f", "jpeg"]])
def test_a_rerun_never_feeds_on_its_own_results(tmp_path, rng, extra):
    """Run twice, three times in a row over a folder (outputs next to the inputs) and over a glob: the second and
    third runs write nothing and take no earlier result as input, whatever the naming."""
    src = tmp_path / "p"
    src.mkdir()
    for n in range(3):
        save_image(src / f"IMG_{n}.png", rng.integers(0, 256, (12, 12, 3), np.uint8))
    for args in ([src], [f"{src}/*"]):
        for run in range(3):
            res = _run("convolve", *args, "-k", "edge", "-j", "1", *extra)
            assert res.exit_code == 0, res.stderr
            assert len(list(src.iterdir())) == 6, sorted(p.name for p in src.iterdir())
            if run:
                assert res.stderr.startswith("cnnfilter: 0 done, 3 skipped") and "3 ignored" in res.stderr
            assert len(res.stderr.splitlines()) == 1


def test_earlier_results_in_another_format_are_not_inputs_either(tmp_path, rng):
    """A run that kept PNGs, then one with -f jpeg into another folder: the *.edge.png results are ignored (not
    made *.edge.edge.jpg)."""
    src = tmp_path / "p"
    src.mkdir()
    for n in range(3):
        save_image(src / f"IMG_{n}.png", rng.integers(0, 256, (12, 12, 3), np.uint8))
    assert _run("convolve", src, "-k", "edge", "-j", "1", "-q").exit_code == 0
    res = _run("convolve", src, "-k", "edge", "-j", "1", "-f", "jpeg", "-o", tmp_path / "j")
    assert res.exit_code == 0 and "3 done" in res.stderr and "3 ignored" in res.stderr
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == [f"IMG_{n}.edge.jpg" for n in range(3)]


def test_naming_templates_and_in_place(folder, tmp_path, rng):
    """--name and --suffix name outputs; -f picks the format and extension; --in-place replaces the input."""
    assert _run("convolve", folder / "grey.png", folder / "rgba.png", "-k", "edge",
                "--name", "{kernel}-{stem}.{ext}", "-o", tmp_path / "n", "-f", "jpeg", "-j", "1").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["edge-grey.jpg", "edge-rgba.jpg"]
    assert _run("convolve", folder / "grey.png", "-k", "edge", "--suffix", "_e").exit_code == 0
    assert (folder / "grey_e.png").exists()
    res = _run("convolve", folder / "grey.png", "-k", "edge", "--name", "{nope}.png")
    assert res.exit_code == 2 and "is not a valid template" in res.stderr
    target = tmp_path / "victim.png"
    save_image(target, np.full((6, 6), 10, np.uint8))
    assert _run("convolve", target, "-k", "0,0,0;0,2,0;0,0,0", "--in-place").exit_code == 0
    np.testing.assert_array_equal(load_image(target), np.full((6, 6), 20))


def test_parallel_workers_give_the_same_files(folder, tmp_path):
    """-j 2 (worker processes) writes exactly what -j 1 writes."""
    a, b = tmp_path / "a", tmp_path / "b"
    _run("convolve", folder, "-r", "-k", "gaussian", "-o", a, "-j", "1")
    res = _run("convolve", folder, "-r", "-k", "gaussian", "-o", b, "-j", "2")
    assert res.exit_code == 1 and "6 done, 2 failed" in res.stderr
    for p in a.rglob("*.png"):
        np.testing.assert_array_equal(load_image(p), load_image(b / p.relative_to(a)))


def test_fail_fast_stops_at_the_first_failure(folder, tmp_path):
    res = _run("convolve", folder / "notes.png", folder / "grey.png", "-k", "box", "-o", tmp_path / "f", "-j", "1",
               "--fail-fast")
    assert res.exit_code == 1
    assert "0 done, 1 failed; stopped at the first failure (--fail-fast), 1 not run" in res.stderr
    assert not (tmp_path / "f" / "grey.box.png").exists()


def test_max_pixels_refuses_big_images(folder, tmp_path):
    res = _run("convolve", folder / "grey.png", "-k", "box", "--max-pixels", "100", "-o", tmp_path / "x.png")
    assert res.exit_code == 1 and "decompression-bomb limit (100)" in res.stderr


def test_run_keeps_a_bounded_number_of_jobs_in_flight(tmp_path):
    """However many files, at most 2 * processes are submitted ahead of the results (memory of a few images)."""
    consumed = []

    def jobs():
        for n in range(40):
            consumed.append(n)
            yield batch.Job(Path(f"{n}.png"), tmp_path / f"{n}.out")

    seen = 0
    for res in batch.run(jobs(), _touch, processes=2):
        seen += 1
        assert res.status == "done"
        assert len(consumed) <= seen + 2 * 2
    assert seen == 40


def test_run_sends_jobs_in_chunks_and_keeps_them_bounded(tmp_path):
    """Three jobs per message: every job is done exactly once, in any order, and at most 2 * processes messages
    (of three jobs) are taken ahead of the results."""
    consumed = []

    def jobs():
        for n in range(41):
            consumed.append(n)
            yield batch.Job(Path(f"{n}.png"), tmp_path / f"{n}.out")

    seen = []
    for res in batch.run(jobs(), _touch_pid, processes=2, chunk=3):
        seen.append(str(res.source))
        assert res.status == "done"
        assert len(consumed) <= len(seen) + 2 * 2 * 3
    assert sorted(seen) == sorted(f"{n}.png" for n in range(41))
    written = [(tmp_path / f"{n}.out").read_text().split() for n in range(41)]
    assert [name for name, _ in written] == [f"{n}.png" for n in range(41)]
    for first in range(0, 41, 3):  # a message's jobs run in one worker
        assert len({pid for _, pid in written[first : first + 3]}) == 1


def test_chunk_size_gives_every_worker_eight_messages():
    assert batch.chunk_size(1, 2) == 1
    assert batch.chunk_size(40, 2) == 2
    assert batch.chunk_size(200, 2) == batch.MAX_CHUNK
    assert batch.chunk_size(10_000, 16) == batch.MAX_CHUNK
    assert batch.chunk_size(100, 0) == batch.MAX_CHUNK


def test_fail_fast_starts_nothing_after_a_failure_in_a_chunk(tmp_path):
    """With fail_fast, a message's jobs after the failing one are not started; what the other worker ran before
    the failure was seen is reported, each file once. (How many messages that is depends on the workers' pace.)"""
    jobs = [batch.Job(Path(f"{n}.png"), tmp_path / f"{n}.out") for n in range(40)]
    results = list(batch.run(jobs, _fail_on_1, processes=2, chunk=4, fail_fast=True))
    assert [str(r.source) for r in results if r.status == "failed"] == ["1.png"]
    assert not (tmp_path / "2.out").exists() and not (tmp_path / "3.out").exists()
    done = sorted(r.target.name for r in results if r.status == "done")
    assert done == sorted(p.name for p in tmp_path.glob("*.out")) and len(set(done)) == len(done)


def _fail_on_1(src, dst):
    if Path(src).name == "1.png":
        raise ValueError("bad file")
    Path(dst).write_text("ok")


def _touch(src, dst):  # module level: picklable for the worker processes
    Path(dst).write_text(str(src))


def _touch_pid(src, dst):
    import os

    Path(dst).write_text(f"{src} {os.getpid()}")


def test_plan_refuses_to_overwrite_the_input(tmp_path):
    src = batch.Source(tmp_path / "a.png", Path("a.png"))
    (tmp_path / "a.png").write_bytes(b"x")
    [res] = list(batch.plan([src], lambda s: s.path))
    assert res.status == "failed" and "--in-place" in res.message


def test_a_killed_batch_leaves_no_partial_file_and_resumes(tmp_path, rng):
    """SIGKILL in the middle of a batch: every output present is a whole image; --skip-existing finishes the job
    and the killed run's temporary files are gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    for n in range(40):
        save_image(src / f"{n:02d}.png", rng.integers(0, 256, (300, 300, 3), np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cnnfilter", "convolve", str(src), "-k", "gaussian", "--sigma", "2", "-o", str(out),
           "-j", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sorted(out.glob("*.png"))
    assert 3 <= len(written) < 40
    for p in written:
        Image.open(p).load()  # whole, decodable files only
    res = subprocess.run([*cmd, "--skip-existing"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("*.png"))) == 40
    assert not list(out.glob(".*.part"))


def test_review_regressions(folder, tmp_path, rng):
    """An output folder inside the input is never re-read; two inputs for one output are refused; --suffix ''
    works; --in-place refuses -f; a single skipped file exits 0; an empty folder is an error; a file with glob
    characters is one file; templates take plain fields only."""
    res = _run("convolve", folder, "-r", "-k", "box", "-o", folder / "sub" / "out", "-j", "1")
    assert res.exit_code == 1 and "6 done, 2 failed" in res.stderr
    res = _run("convolve", folder, "-r", "-k", "box", "-o", folder / "sub" / "out", "-j", "1", "--skip-existing")
    assert "0 done, 6 skipped (outputs exist; --overwrite replaces them), 2 failed" in res.stderr
    assert not (folder / "sub" / "out" / "sub" / "out").exists()
    res = _run("convolve", folder / "grey.png", folder / "grey.png", "-k", "box", "-o", tmp_path / "d", "-j", "1")
    assert res.exit_code == 1 and "is also the result of" in res.stderr
    res = _run("convolve", folder / "grey.png", "-k", "box", "--suffix", "")  # names the output as the input
    assert res.exit_code == 2 and "--in-place" in res.stderr  # a usage error, as -o INPUT is
    assert _run("convolve", folder / "grey.png", "-k", "box", "--suffix", "", "-o", f"{tmp_path / 'same'}/").exit_code == 0
    assert (tmp_path / "same" / "grey.png").is_file()
    res = _run("convolve", folder / "grey.png", "-k", "box", "--in-place", "-f", "jpeg")
    assert res.exit_code == 2 and "in its own format" in res.stderr
    out = tmp_path / "one.png"
    assert _run("convolve", folder / "grey.png", "-k", "box", "-o", out).exit_code == 0
    res = _run("convolve", folder / "grey.png", "-k", "box", "-o", out, "--skip-existing")
    assert res.exit_code == 0 and "skipped" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _run("convolve", tmp_path / "empty", "-k", "box")
    assert res.exit_code == 1 and "no images found" in res.stderr
    odd = tmp_path / "shot[1].png"
    save_image(odd, rng.integers(0, 256, (6, 6), np.uint8))
    assert _run("convolve", odd, "-k", "box", "-o", tmp_path / "odd.png").exit_code == 0
    assert (tmp_path / "odd.png").is_file()
    res = _run("convolve", folder / "grey.png", "-k", "box", "--name", "{stem.__class__}.png")
    assert res.exit_code == 2 and "not a valid template" in res.stderr


def test_alpha_filter_refuses_zero_sum_kernels(folder):
    res = _run("convolve", folder / "rgba.png", "-k", "edge", "--alpha", "filter")
    assert res.exit_code == 2 and "--alpha keep" in res.stderr


def _die(src, dst):  # a worker that dies on one file
    import os

    if Path(src).name == "1.png":
        os._exit(3)
    Path(dst).write_text("ok")


@pytest.mark.parametrize("chunk", [1, 3])
def test_a_dying_worker_fails_its_file_not_its_siblings(tmp_path, chunk):
    """The files in flight when a worker dies (its own message's and the others') are tried again one at a time:
    only the file that kills a worker twice fails."""
    jobs = [batch.Job(Path(f"{n}.png"), tmp_path / f"{n}.out") for n in range(8)]
    results = list(batch.run(jobs, _die, processes=2, chunk=chunk))
    assert sorted(str(r.source) for r in results) == sorted(f"{n}.png" for n in range(8))
    failed = [r for r in results if r.status == "failed"]
    assert [str(r.source) for r in failed] == ["1.png"] and "worker process failed" in failed[0].message
    assert sum(r.status == "done" for r in results) == 7


def test_recursive_globs_match_pythons_glob_without_following_links(tmp_path):
    """'**' patterns give exactly glob.glob's files on a tree without links; a link to a folder is not
    followed (glob would loop through it)."""
    import glob

    for rel in ("a.png", "b.jpg", "d/c.png", "d/e/f.png", "d/e/.hidden.png", ".h/g.png", "x[1].png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for pattern in ("**/*.png", "**", "d/**/*.png", "**/e/*.png", "*.png", "**/[ab].*", "**/?.png", "d/**"):
        full = f"{tmp_path}/{pattern}"
        ours = sorted(str(s.path) for s in batch.iter_sources([full], recursive=True)
                      if isinstance(s, batch.Source))
        theirs = sorted(p for p in glob.glob(full, recursive=True) if Path(p).is_file())
        assert ours == theirs, pattern
    os.symlink("..", tmp_path / "d" / "up")
    found = [s.path for s in batch.iter_sources([f"{tmp_path}/**/*.png"], recursive=True)]
    assert len(found) == len(set(found)) == 4  # a.png, x[1].png, d/c.png, d/e/f.png: once each


def test_glob_through_dotdot_keeps_results_inside_the_output_folder(tmp_path):
    """A glob that climbs out of its root ('in/*/../../victim/*.png') names its results by file name alone."""
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "v.png").write_bytes(b"")
    [src] = batch.iter_sources([f"{tmp_path}/in/*/../../victim/*.png"])
    assert src.rel == Path("v.png")
    out = batch.output_path(src, out_dir=tmp_path / "out", template="{stem}.{kernel}.{ext}", label="edge", ext="png")
    assert out == tmp_path / "out" / "v.edge.png"


def test_plan_turns_every_error_into_that_files_failure(tmp_path):
    """A symbolic link loop and an output that is another input fail alone; the rest are jobs."""
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.box.png").write_bytes(b"")
    os.symlink("loop.png", tmp_path / "loop.png")
    sources = list(batch.iter_sources([str(tmp_path)]))
    name_for = lambda s: batch.output_path(s, out_dir=None, template="{stem}.box.png", label="box", ext="png")  # noqa: E731
    items = {str(i.source.name): i for i in batch.plan(sources, name_for, overwrite=True)}
    assert isinstance(items["a.box.png"], batch.Job)
    assert items["a.png"].status == "failed" and "is an input of this command" in items["a.png"].message
    assert items["loop.png"].status == "failed" and "symbolic link loop" in items["loop.png"].message


def test_outputs_keep_the_inputs_format_exif_and_jpeg_tables(tmp_path, rng):
    """Without -f: JPEG stays JPEG with the input's quantisation tables, subsampling and EXIF (orientation reset once
    applied), PNG stays PNG, WebP stays WebP; --quality makes new tables; --quality with lossless outputs only is a
    usage error; standard output takes the input's format."""
    from PIL import JpegImagePlugin

    src = tmp_path / "p"
    src.mkdir()
    pixels = rng.integers(0, 256, (24, 32, 3), np.uint8)
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "TestCam", 6
    Image.fromarray(pixels).save(src / "a.jpg", quality=75, subsampling=2, exif=exif.tobytes())
    Image.fromarray(pixels).save(src / "b.png")
    Image.fromarray(pixels).save(src / "c.webp")
    assert _run("convolve", src, "-k", "sharpen", "-j", "1").exit_code == 0
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg", "a.sharpen.jpg", "b.png", "b.sharpen.png", "c.sharpen.webp",
                                                     "c.webp"]
    a, out = Image.open(src / "a.jpg"), Image.open(src / "a.sharpen.jpg")
    assert out.size == (24, 32)  # the EXIF orientation (6) was applied ...
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "TestCam"  # ... and reset; the camera kept
    assert out.quantization == a.quantization and JpegImagePlugin.get_sampling(out) == 2
    assert Image.open(src / "c.sharpen.webp").format == "WEBP"
    assert _run("convolve", src / "a.jpg", "-k", "sharpen", "--quality", "95", "-o", tmp_path / "q.jpg").exit_code == 0
    assert Image.open(tmp_path / "q.jpg").quantization != a.quantization
    res = _run("convolve", src / "b.png", src / "c.webp", "-k", "box", "--quality", "80", "-o", tmp_path / "d")
    assert res.exit_code == 0  # the WebP output takes it
    res = _run("convolve", src / "b.png", "-k", "box", "--quality", "80", "-o", f"{tmp_path / 'd2'}/")
    assert res.exit_code == 2 and "--quality is for JPEG and WebP outputs" in res.stderr
    res = CliRunner().invoke(cli, ["convolve", "-", "-k", "box", "-o", "-"], input=(src / "a.jpg").read_bytes())
    assert res.exit_code == 0 and res.stdout_bytes[:3] == b"\xff\xd8\xff"


def test_engine_for_a_batch(monkeypatch):
    """A worker loads the compiled loops only when it has enough images to repay loading numba (fewer needed for
    float kernels, which numpy filters slowly); CNNFILTER_ENGINE (config.ENGINE) overrides; Settings without an
    engine leave the setting as it is."""
    from cnnfilter import batch, config

    monkeypatch.setattr(config, "ENGINE", "auto")
    assert batch.engine_for(200, 2, exact=True) == "auto"
    assert batch.engine_for(200, 2) == "compiled"
    assert batch.engine_for(config.COMPILED_MIN_JOBS_EXACT * 2, 2, exact=True) == "compiled"
    assert batch.engine_for(10, 1) == "auto"
    monkeypatch.setattr(config, "ENGINE", "numpy")
    assert batch.engine_for(10**6, 2) == "numpy"
    with batch.Settings().applied():
        assert config.ENGINE == "numpy"
    with batch.Settings(engine="compiled").applied():
        assert config.ENGINE == "compiled"
    assert config.ENGINE == "numpy"


@pytest.mark.parametrize("command", [("convolve", "-k", "box"), ("pool",), ("featuremaps", "-m", "digits")])
def test_a_folder_inside_its_output_folder_is_a_usage_error_that_says_so(folder, tmp_path, command, monkeypatch):
    """-o naming the input folder, or a folder holding it ('-o .'), is one line naming the conflict and exit 2,
    where it said 'no images found'; nothing is written."""
    before = sorted(p.name for p in folder.rglob("*"))
    res = _run(*command[:1], folder, *command[1:], "-o", folder)
    assert res.exit_code == 2 and f"{str(folder)!r} is the output folder" in res.output
    res = _run(*command[:1], f"{folder}/*.png", *command[1:], "-o", folder)
    assert res.exit_code == 2 and "matches is inside the output folder" in res.output
    monkeypatch.chdir(tmp_path)
    res = _run(*command[:1], "in", *command[1:], "-o", ".")
    assert res.exit_code == 2 and "'in' is inside the output folder '.'" in res.output
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def _bump_or_die(marker, src, dst):
    """An in-place job: the number in the file goes up by one, replaced atomically (a new inode, as cnnfilter's
    writes); the worker dies once, on 5.txt, after its message's first job has been written."""
    import os

    if Path(src).name == "5.txt" and not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    tmp = Path(f"{dst}.tmp")
    tmp.write_text(str(int(Path(dst).read_text()) + 1))
    os.replace(tmp, dst)


@pytest.mark.parametrize("chunk", [1, 4])
def test_an_in_place_job_run_again_after_a_worker_died_is_not_run_twice(tmp_path, chunk):
    """After a worker dies, every job in flight is tried again: an in-place job whose file the dead worker (or a
    worker torn down with it) had already replaced is skipped, so no file is filtered twice; each is reported once."""
    from functools import partial

    files = []
    for n in range(24):
        (tmp_path / f"{n}.txt").write_text("0")
        files.append(tmp_path / f"{n}.txt")
    jobs = [batch.Job(f, f, batch.stamp_of(f)) for f in files]
    results = list(batch.run(jobs, partial(_bump_or_die, tmp_path / "marker"), processes=2, chunk=chunk))
    assert sorted(str(r.source) for r in results) == sorted(map(str, files))
    assert [f.read_text() for f in files] == ["1"] * 24
    assert {r.status for r in results} <= {"done", "skipped"}
    assert all("already replaced" in r.message for r in results if r.status == "skipped")


def test_an_in_place_job_on_a_file_changed_since_planning_is_skipped(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("0")
    job = batch.Job(f, f, batch.stamp_of(f))
    f.write_text("10")  # changed after planning (size differs)
    (res,) = batch.run([job], _touch)
    assert res.status == "skipped" and f.read_text() == "10"


def test_outputs_that_would_all_overwrite_their_inputs_name_one_and_count_the_rest(tmp_path, rng):
    src = tmp_path / "p"
    src.mkdir()
    for n in range(3):
        save_image(src / f"IMG_{n}.png", rng.integers(0, 256, (12, 12, 3), np.uint8))
    res = _run("convolve", src, "-k", "box", "--name", "{name}")
    assert res.exit_code == 2
    assert "IMG_0.png': the output would overwrite the input; use --in-place" in res.output
    assert "(and 2 more like it)" in res.output


def test_an_image_file_name_for_several_inputs_is_a_usage_error(folder, tmp_path):
    """'-o result.jpg' for a folder is refused (exit 2) rather than made a folder called result.jpg; an existing
    folder of that name, or a trailing slash, is a folder."""
    res = _run("convolve", folder, "-k", "box", "-o", tmp_path / "result.jpg")
    assert res.exit_code == 2 and "names an image file, but there are several inputs" in res.output
    assert not (tmp_path / "result.jpg").exists()
    res = _run("convolve", folder, "-k", "box", "-o", f"{tmp_path / 'result.jpg'}/", "-q")
    assert (tmp_path / "result.jpg").is_dir() and any((tmp_path / "result.jpg").iterdir())


def test_planning_a_folder_of_common_images_loads_no_other_pillow_plugin(tmp_path, rng):
    """Pillow's five common formats answer from the plugins it loads first; loading every plugin (30-70 ms of a
    batch's start) waits for a suffix that needs it, and an output folder's name without a suffix never does."""
    import subprocess
    import sys

    src = tmp_path / "p"
    src.mkdir()
    for n in range(3):
        save_image(src / f"IMG_{n}.png", rng.integers(0, 256, (12, 12, 3), np.uint8))
    (src / "README").write_text("no suffix")
    code = ("import sys; from cnnfilter.batch import Request, prepare; "
            f"plan = prepare(Request(({str(src)!r},), 'box', output={str(tmp_path / 'out')!r})); "
            "print(len(plan.items), 'PIL.SgiImagePlugin' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["3", "False"], res.stderr


def test_a_double_star_without_recursive_says_it_matches_one_level(tmp_path, rng):
    """'**' without -r is '*' (bash without globstar, Python's glob): the top folder's own files are not matched,
    and a warning says so (not with -q); with -r every level is, and nothing is said."""
    (tmp_path / "p" / "sub").mkdir(parents=True)
    save_image(tmp_path / "p" / "top.png", rng.integers(0, 256, (8, 8), np.uint8))
    save_image(tmp_path / "p" / "sub" / "low.png", rng.integers(0, 256, (8, 8), np.uint8))
    glob = f"{tmp_path}/p/**/*.png"
    res = _run("convolve", glob, "-k", "box", "-o", tmp_path / "a")
    assert res.exit_code == 0 and "'**' matches one folder level without -r (--recursive)" in res.stderr
    assert [p.name for p in (tmp_path / "a").rglob("*.png")] == ["low.box.png"]
    assert _run("convolve", glob, "-k", "box", "-o", tmp_path / "q", "-q").stderr == ""
    res = _run("convolve", glob, "-k", "box", "-o", tmp_path / "b", "-r")
    assert res.exit_code == 0 and "warning" not in res.stderr
    assert sorted(p.name for p in (tmp_path / "b").rglob("*.png")) == ["low.box.png", "top.box.png"]
    res = _run("featuremaps", glob, "-o", tmp_path / "m", "--kernels", "box")
    assert res.exit_code == 0 and "'**' matches one folder level" in res.stderr
