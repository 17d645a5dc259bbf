"""Batches on a Dask cluster: :class:`DaskRunner` is a :class:`cnnfilter.batch.Runner` whose jobs run on the workers
of a ``distributed`` cluster, either one it starts on this machine (``local:N``, N worker processes) or an existing
one (``tcp://HOST:PORT``). Dask schedules; cnnfilter only submits.

The batch is the local one: the same file list, output names, formats, atomic writes, ``--skip-existing`` resume
and failure summary, because the jobs and the unit of work (``work(source, target)``) are the batch module's. What
differs is where ``work`` runs:

- Jobs are sent in tasks of a few (``chunk``, fewer towards the end), a window of tasks at a time (twice the
  cluster's worker threads), never the whole list as futures; results are yielded as their futures complete.
- A worker that dies costs nothing: the scheduler runs its task again on another worker (dask's own retry,
  ``distributed.scheduler.allowed-failures``); a task that kills every worker it meets is split, each of its files
  run alone, and a file that still does is reported as that file's failure. Outputs are written through temporary
  files renamed once complete, so a killed worker leaves no half-written output; its temporaries are removed when
  the batch ends.
- Paths are sent absolute, and must mean the same files on every worker (a shared file system): a worker that
  cannot see an input reports it as that file's failure.

``distributed`` is optional (``pip install 'cnnfilter[dask]'``), imported only when a scheduler is given.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .batch import Job, Result, Settings, attempt

_LOCAL = re.compile(r"local:(\d+)")


#: how long a scheduler at tcp://... has to answer
CONNECT_TIMEOUT = "20s"


class ClusterError(RuntimeError):
    """The cluster could not be started or reached (the batch's failure, not its command line's)."""


def check_address(address: str) -> str:
    """``local:N`` (1 <= N <= 256) or a scheduler address ``tcp://HOST:PORT`` (``tls://``, ``ucx://`` too)."""
    text = address.strip()
    m = _LOCAL.fullmatch(text)
    if m and 1 <= int(m.group(1)) <= 256:
        return text
    if re.fullmatch(r"(tcp|tls|ucx)://[^\s/]+:\d{1,5}", text):
        return text
    msg = f"scheduler {address!r} is not local:N (N worker processes here, 1-256) or tcp://HOST:PORT (a cluster)"
    raise ValueError(msg)


MAX_CHUNK = 64  # files per task at most: a task costs the scheduler and the client about 12 ms of CPU, which on
# a 2-vCPU VM (two hyperthreads of one core) the workers pay: 8 files a task cost a local:1 batch of 800 photos
# 15-17 % more time per image than cnnfilter's own pool, 32-100 files 7-8 % (whole commands, fixed start-up
# taken out; benchmarks/cluster.py)


def chunk_size(count: int, workers: int | None) -> int:
    """Files per task for a batch of ``count`` files on ``workers`` worker processes (None: a cluster elsewhere,
    taken as 8): enough tasks for every worker to have four, at most :data:`MAX_CHUNK` files each, so that a
    dead worker's task costs little to run again and progress moves."""
    return max(1, min(MAX_CHUNK, count // (4 * (workers or 8))))


class DaskRunner(NamedTuple):
    """Jobs on the workers of the cluster at ``address`` (see :func:`check_address`), each under ``settings``,
    ``chunk`` jobs per task (:func:`chunk_size`)."""

    address: str
    settings: Settings = Settings()
    chunk: int = 8

    def run(self, items, work, *, fail_fast=False) -> Iterator[Result]:
        client, close = _connect(self.address)
        try:
            yield from _submit(client, items, work, self.settings, fail_fast, max(1, self.chunk))
        finally:
            close()


def _connect(address: str):
    """A ``distributed.Client`` and the function that closes it (and the cluster it started)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        msg = "--scheduler needs dask's distributed scheduler: pip install 'cnnfilter[dask]'"
        raise ValueError(msg) from None
    m = _LOCAL.fullmatch(address.strip())
    if m:
        import logging

        from . import runtime
        from .batch import default_jobs

        import dask

        n = int(m.group(1))
        threads = str(max(1, default_jobs() // n))  # one task per worker process; the processes share the cores
        # dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, so each image's buffers were mapped
        # and page-faulted afresh: 1,570 faults and 17-19 ms a photo against 0 and 9-11 ms in cnnfilter's own
        # workers (measured, 1024x768 JPEG, sharpen); these get cnnfilter's settings (runtime.tune) instead, in
        # the environment they start with (glibc reads it once, before any Python runs)
        spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                 "MALLOC_TRIM_THRESHOLD_": runtime.TRIM_THRESHOLD, "MALLOC_MMAP_THRESHOLD_": runtime.MMAP_THRESHOLD}
        # the nanny writes its pre-spawn variables into this process's own environment (dask documents it); they
        # are put back as they were once the workers are up and when the batch ends (a worker restarted in
        # between sets them again). Thread counts go to the workers alone: in this process they would make
        # numba's pool disagree with its own configuration.
        saved = dict(os.environ)
        # the cluster's periodic chores wake less often: its event loops' tick (every 20 ms), the workers'
        # statistical profiler (a sample every 10 ms) and memory monitors (every 100 ms) took turns on the cores
        # the workers filter on (local:2, 800 photos: 8.8-9.0 s against 9.2-9.5 s, 0.9 s less CPU)
        quiet = {"distributed.admin.tick.interval": "1s", "distributed.worker.profile.enabled": False,
                 "distributed.worker.memory.monitor-interval": "1s"}
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn, **quiet}):
                # its log lines (a worker restarted) stay quiet: the batch reports per file
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       env={"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads})
        finally:
            _restore(saved)
        client = Client(cluster)

        def close():
            try:
                client.close()
                cluster.close()
            finally:
                _restore(saved)

        return client, close
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        msg = f"cannot reach the scheduler at {address}: {exc}"
        raise ClusterError(msg) from None
    return client, client.close


def _restore(environ: dict) -> None:
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    os.environ.update(environ)


def _submit(client, items, work, settings: Settings, fail_fast: bool, chunk: int) -> Iterator[Result]:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from .outputs import remove_stale

    threads = max(1, sum(client.nthreads().values()))
    window = 2 * threads  # tasks in flight
    batch = f"cnnfilter-{os.getpid()}-{os.urandom(4).hex()}"
    numbers = itertools.count()
    tasks: dict = {}  # future -> the jobs it runs, as the caller gave them
    done = as_completed()
    # tasks shrink towards the end (a quarter of what is left per worker thread, as OpenMP's "guided" schedule
    # does), so that no worker is left waiting for another's last long task
    left = len(items) if hasattr(items, "__len__") else None
    it = iter(items)
    alone: list = []  # the jobs of a task whose workers died: each runs again in a task of its own
    solo: set = set()  # the jobs sent alone: if their worker dies again, it was this file
    targets = []
    stop = False

    def send(jobs):
        paths = [(_absolute(j.source), _absolute(j.target), j.stamp) for j in jobs]
        fut = client.submit(_remote, work, paths, settings, key=f"{batch}-{next(numbers)}", pure=False)
        tasks[fut] = jobs
        done.add(fut)

    def fill():
        nonlocal stop, left
        passed = []
        while not stop and len(tasks) < window:
            if alone:  # one at a time, nothing else in flight: if it kills its worker again, it takes nothing else
                if not tasks:
                    solo.add(alone[0])
                    send([alone.pop(0)])
                break
            jobs = []
            size = chunk if left is None else max(1, min(chunk, -(-left // (4 * threads))))
            while len(jobs) < size:
                item = next(it, None)
                if item is None:
                    break
                if left is not None:
                    left -= 1
                if isinstance(item, Result):
                    passed.append(item)
                    stop = stop or (fail_fast and item.status == "failed")
                    continue
                jobs.append(item)
                targets.append(_absolute(item.target))
            if not jobs:
                break
            send(jobs)
        return passed

    try:
        yield from fill()
        while tasks:
            fut = next(done)
            jobs = tasks.pop(fut)
            try:
                results = fut.result()
            except KilledWorker:
                # which file it was is not known (a task waiting on a worker counts its deaths too, though it never
                # ran): each again, alone, unless it already was
                if len(jobs) > 1 or jobs[0] not in solo:
                    alone.extend(jobs)
                    yield from fill()
                    continue
                results = [Result(jobs[0].source, jobs[0].target, "failed", "the worker processes running this file "
                                  "died each time (killed, or out of memory)")]
            except Exception as exc:  # noqa: BLE001 - a task's failure on the cluster is its files' failure
                results = [Result(j.source, j.target, "failed", f"on the cluster: {type(exc).__name__}: {exc}")
                           for j in jobs]
            for job, res in zip(jobs, results):
                yield res._replace(source=job.source, target=job.target)
                stop = stop or (fail_fast and res.status == "failed")
            if not stop:
                yield from fill()
            # once stopped, nothing more is sent; the tasks already sent are waited for and reported (a task
            # cannot be taken back from a worker that runs it: its files are written either way)
        for job in alone:  # a task split after a worker died, when --fail-fast had already stopped the batch
            yield Result(job.source, job.target, "failed", "not run again after --fail-fast stopped the batch")
    finally:
        client.cancel(list(tasks))
        remove_stale(targets)  # a killed worker's temporaries (its jobs ran again elsewhere)


def _absolute(path):
    return path if path is None or str(path) == "-" else Path(os.path.abspath(path))


_TUNED = []


def _remote(work, paths, settings: Settings) -> list[Result]:
    """One task on a worker, a few jobs: the process settings once (:func:`cnnfilter.runtime.tune`), the batch's
    settings for the task."""
    if not _TUNED:
        from . import runtime

        runtime.tune()
        _TUNED.append(True)
    with settings.applied():
        return [attempt(work, source, target, stamp) for source, target, stamp in paths]


__all__ = ["DaskRunner", "Job", "check_address"]
