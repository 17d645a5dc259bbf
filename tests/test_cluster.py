"""cnnfilter.cluster: folder batches on a Dask cluster (a LocalCluster of worker processes on loopback) give the local
batch's files, and a worker that dies costs nothing."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from cnnfilter import cluster  # noqa: E402
from cnnfilter.batch import Job  # noqa: E402
from cnnfilter.cli import cli  # noqa: E402


def _folder(root: Path, n: int, size=(40, 56)) -> Path:
    rng = np.random.default_rng(3)
    for i in range(n):
        sub = root / ("a" if i % 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(sub / f"img{i:03d}.png")
    return root


def _files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_address():
    assert cluster.check_address(" local:3 ") == "local:3"
    assert cluster.check_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "local:x", "local", "http://h:1", "tcp://host", "tcp://h:1/x"):
        with pytest.raises(ValueError, match="local:N"):
            cluster.check_address(bad)


def test_local_cluster_batch_is_byte_identical_to_the_local_batch_and_resumes(tmp_path):
    src = _folder(tmp_path / "in", 24)
    runner = CliRunner()
    args = ["convolve", str(src), "-r", "-k", "gaussian:sigma=1.2", "-k", "edge", "-f", "jpeg"]
    local = runner.invoke(cli, [*args, "-o", str(tmp_path / "local"), "-j", "2"])
    assert local.exit_code == 0, local.output
    dask = runner.invoke(cli, [*args, "-o", str(tmp_path / "dask"), "--scheduler", "local:2"])
    assert dask.exit_code == 0 and "24 done" in dask.output, dask.output
    assert _files(tmp_path / "local") == _files(tmp_path / "dask") and len(_files(tmp_path / "dask")) == 24
    again = runner.invoke(cli, [*args, "-o", str(tmp_path / "dask"), "--scheduler", "local:2", "--skip-existing"])
    assert again.exit_code == 0 and "0 done, 24 skipped" in again.output
    pooled = runner.invoke(cli, ["pool", str(src), "-r", "-o", str(tmp_path / "pool"), "--scheduler", "local:1"])
    assert pooled.exit_code == 0 and "24 done" in pooled.output


def test_a_file_the_workers_cannot_see_is_that_files_failure(tmp_path):
    from functools import partial

    from cnnfilter.io import SaveSpec
    from cnnfilter.kernels import get_kernel
    from cnnfilter.ops import FilterSpec, process_file

    src = _folder(tmp_path / "in", 3)
    work = partial(process_file, spec=FilterSpec((get_kernel("edge"),)), save=SaveSpec())
    jobs = [Job(p, tmp_path / "out" / p.name) for p in sorted(src.rglob("*.png"))]
    jobs.insert(1, Job(tmp_path / "gone.png", tmp_path / "out" / "gone.png"))  # planned, then removed
    results = list(cluster.DaskRunner("local:1").run(jobs, work))
    assert [r.status for r in results].count("done") == 3
    (failed,) = [r for r in results if r.status == "failed"]
    assert failed.source == tmp_path / "gone.png" and "no such file" in failed.message


def _dies_on(marker: Path, name: str, always: bool, source, target):
    """A unit of work whose worker process is killed on the file named ``name`` (once, or every time)."""
    if Path(source).name == name and (always or not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    Path(target).write_bytes(Path(source).read_bytes())


def test_a_file_that_kills_every_worker_is_reported_and_the_batch_goes_on(tmp_path):
    from functools import partial

    import dask

    src = _folder(tmp_path / "in", 6)
    jobs = [Job(p, tmp_path / p.name) for p in sorted(src.rglob("*.png"))]
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        results = list(cluster.DaskRunner("local:2").run(jobs, partial(_dies_on, tmp_path / "m", "img004.png", True)))
    status = {r.source.name: r.status for r in results}
    assert status.pop("img004.png") == "failed" and set(status.values()) == {"done"} and len(status) == 5
    (failed,) = [r for r in results if r.status == "failed"]
    assert "died" in failed.message


def test_a_worker_killed_during_a_batch_of_hundreds_costs_nothing(tmp_path):
    src = _folder(tmp_path / "in", 300, size=(96, 128))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cnnfilter", "convolve", str(src), "-r", "-k", "gaussian:sigma=2", "-o", str(out),
           "--scheduler", "local:2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if len(list(out.rglob("*.png"))) >= 30:
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "spawn_main" in " ".join(c.cmdline())]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "the batch ended before a worker could be killed"
    assert proc.returncode == 0, err
    written = sorted(out.rglob("*.png"))
    assert len(written) == 300 and not [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"]
    for p in written:
        with Image.open(p) as img:
            img.load()  # whole and valid
            assert img.size == (128, 96)


def test_featuremaps_on_a_local_cluster_writes_the_local_reports(tmp_path):
    digits = sorted((Path(__file__).parent.parent / "samples" / "digits" / "3").glob("*.png"))[:5]
    src = tmp_path / "in"
    src.mkdir()
    for p in digits:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.png").write_bytes(b"not a png")
    runner = CliRunner()
    args = ["featuremaps", str(src), "-m", "digits", "--layers", "conv1,pool1", "-q"]
    local = runner.invoke(cli, [*args, "-o", str(tmp_path / "local")])
    dask = runner.invoke(cli, [*args, "-o", str(tmp_path / "dask"), "--scheduler", "local:2"])
    assert local.exit_code == dask.exit_code == 1 and "5 done, 1 failed" in dask.output, dask.output
    assert "broken.png" in dask.output
    reports = _files(tmp_path / "dask")
    assert reports == _files(tmp_path / "local") and len({p.parts[0] for p in reports} - {"index.html"}) == 5
    assert Path("index.html") in reports  # the page linking the five reports, the same from both


def test_a_local_cluster_leaves_this_processs_environment_as_it_was(tmp_path):
    # dask's nanny writes its pre-spawn variables (MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS, ...) into the process
    # that starts it; a later numba pool in this process then disagreed with numba's configuration
    from functools import partial

    before = dict(os.environ)
    src = _folder(tmp_path / "in", 2)
    jobs = [Job(p, tmp_path / p.name) for p in sorted(src.rglob("*.png"))]
    runner = cluster.DaskRunner("local:1")
    results = list(runner.run(jobs, partial(_dies_on, tmp_path / "m", "none", False)))
    assert [r.status for r in results] == ["done", "done"]
    assert dict(os.environ) == before


def test_fail_fast_reports_every_file_it_wrote_and_an_unreachable_cluster_is_a_failure(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", 20)
    (src / "a" / "000-bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["convolve", str(src / "a"), "-k", "edge", "-o", str(out), "--fail-fast",
                                   "--scheduler", "local:2"])
    assert res.exit_code == 1
    done = int(res.output.split("cnnfilter: ")[1].split(" done")[0])
    assert done == len(list(out.rglob("*.png")))  # every file written is counted
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    res = CliRunner().invoke(cli, ["convolve", str(src / "a"), "-k", "edge", "-o", str(tmp_path / "x"),
                                   "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 1 and "cannot reach the scheduler" in res.output


def test_tasks_carry_up_to_64_files_and_every_worker_gets_four():
    """The task size: a batch splits into at least four tasks per worker, each of 1 to 64 files; a cluster
    elsewhere counts as 8 workers."""
    assert cluster.chunk_size(1600, 2) == 64 and cluster.chunk_size(400, 2) == 50
    assert cluster.chunk_size(3, 2) == 1 and cluster.chunk_size(100, None) == 3
    for count in (1, 7, 64, 999, 10**6):
        for workers in (1, 2, 16, None):
            size = cluster.chunk_size(count, workers)
            assert 1 <= size <= 64 and (size == 1 or count // size >= 4 * (workers or 8))


def _task_key(source, target):
    from distributed import get_worker

    Path(target).write_text(get_worker().get_current_task())


def test_tasks_shrink_towards_the_end_of_a_batch(tmp_path):
    """A quarter of the files not yet sent per worker thread, at most ``chunk``: no worker waits long for another's
    last task. Every file runs once."""
    jobs = [Job(tmp_path / f"{n}.png", tmp_path / f"{n}.key") for n in range(40)]
    results = list(cluster.DaskRunner("local:1", chunk=8).run(jobs, _task_key))
    assert [r.status for r in results] == ["done"] * 40
    keys = [(tmp_path / f"{n}.key").read_text() for n in range(40)]
    sizes = [len(list(group)) for _, group in itertools.groupby(keys)]
    assert sizes == [8, 8, 6, 5, 4, 3, 2, 1, 1, 1, 1]
    assert len(set(keys)) == len(sizes)  # each task's files ran together, in order


def _worker_settings(source, target):
    import dask

    keys = ("distributed.admin.tick.interval", "distributed.worker.profile.enabled",
            "distributed.worker.memory.monitor-interval")
    Path(target).write_text(repr([dask.config.get(k) for k in keys]))


def test_a_local_clusters_workers_wake_less_often(tmp_path):
    """local:N workers run with the event loop's tick at 1 s, no statistical profiler and a memory monitor every
    second (their periodic chores took turns on the cores the filters use); this process's dask configuration is
    left as it was."""
    import dask

    before = dask.config.get("distributed.worker.profile.enabled")
    src = _folder(tmp_path / "in", 1)
    jobs = [Job(p, tmp_path / "out.txt") for p in sorted(src.rglob("*.png"))]
    results = list(cluster.DaskRunner("local:1").run(jobs, _worker_settings))
    assert [r.status for r in results] == ["done"]
    assert (tmp_path / "out.txt").read_text() == "['1s', False, '1s']"
    assert dask.config.get("distributed.worker.profile.enabled") == before


def _bump_or_die(marker: Path, source, target):
    """An in-place job (the number in the file up by one, replaced atomically); the worker is killed once, on
    3.txt, after its task's earlier files were written."""
    if Path(source).name == "3.txt" and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    tmp = Path(f"{target}.tmp")
    tmp.write_text(str(int(Path(target).read_text()) + 1))
    os.replace(tmp, target)


def test_a_task_run_again_after_its_worker_died_does_not_redo_its_in_place_files(tmp_path):
    """Dask runs a dead worker's whole task again: the in-place files it had already replaced are skipped, not
    filtered twice."""
    from functools import partial

    from cnnfilter.batch import stamp_of

    files = []
    for n in range(8):
        (tmp_path / f"{n}.txt").write_text("0")
        files.append(tmp_path / f"{n}.txt")
    jobs = [Job(f, f, stamp_of(f)) for f in files]
    results = list(cluster.DaskRunner("local:1", chunk=8).run(jobs, partial(_bump_or_die, tmp_path / "marker")))
    assert sorted(r.source.name for r in results) == sorted(f.name for f in files)
    assert [f.read_text() for f in files] == ["1"] * 8
    assert [r.status for r in results].count("skipped") >= 1  # 0.txt .. 2.txt were written before the death
