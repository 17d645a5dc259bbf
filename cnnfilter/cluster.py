"""Batches on a Dask cluster: :class:`DaskRunner` is a :class:`cnnfilter.batch.Runner` whose jobs run on the workers
of a ``distributed`` cluster, either one it starts on this machine (``local:N``, N worker processes) or an existing
one (``tcp://HOST:PORT``). Dask schedules; cnnfilter only submits.

The batch is the local one: the same file list, output names, formats, atomic writes, ``--skip-existing`` resume
and failure summary, because the jobs and the unit of work (``work(source, target)``) are the batch module's. What
differs is where ``work`` runs:

- Jobs are submitted a window at a time (twice the cluster's worker threads), never the whole list as futures, and
  results are yielded as their futures complete.
- A worker that dies costs nothing: the scheduler runs its jobs again on another worker (dask's own retry,
  ``distributed.scheduler.allowed-failures``), and a file that kills every worker it meets is reported as that
  file's failure. Outputs are written through temporary files renamed once complete, so a killed worker leaves no
  half-written output; its temporaries are removed when the batch ends.
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


class DaskRunner(NamedTuple):
    """Jobs on the workers of the cluster at ``address`` (see :func:`check_address`), each under ``settings``."""

    address: str
    settings: Settings = Settings()

    def run(self, items, work, *, fail_fast=False) -> Iterator[Result]:
        client, close = _connect(self.address)
        try:
            yield from _submit(client, items, work, self.settings, fail_fast)
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
        # one thread per worker process, and one numba thread in each: the processes share the cores
        import logging

        # its log lines (a worker restarted) stay quiet: the batch reports per file
        cluster = LocalCluster(n_workers=int(m.group(1)), threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR,
                               env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()

        return client, close
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        msg = f"cannot reach the scheduler at {address}: {exc}"
        raise ValueError(msg) from None
    return client, client.close


def _submit(client, items, work, settings: Settings, fail_fast: bool) -> Iterator[Result]:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from .outputs import remove_stale

    threads = max(1, sum(client.nthreads().values()))
    window = 2 * threads
    batch = f"cnnfilter-{os.getpid()}-{os.urandom(4).hex()}"
    numbers = itertools.count()
    jobs: dict = {}  # future -> the job as the caller gave it
    done = as_completed()
    it = iter(items)
    targets = []
    stop = False

    def fill():
        nonlocal stop
        passed = []
        while not stop and len(jobs) < window:
            item = next(it, None)
            if item is None:
                break
            if isinstance(item, Result):
                passed.append(item)
                stop = fail_fast and item.status == "failed"
                continue
            source, target = _absolute(item.source), _absolute(item.target)
            fut = client.submit(_remote, work, source, target, settings, key=f"{batch}-{next(numbers)}", pure=False)
            jobs[fut] = item
            targets.append(target)
            done.add(fut)
        return passed

    try:
        yield from fill()
        while jobs:
            fut = next(done)
            job = jobs.pop(fut)
            try:
                res = fut.result()
            except KilledWorker:
                res = Result(job.source, job.target, "failed", "the worker processes running this file died each "
                             "time (killed, or out of memory)")
            except Exception as exc:  # noqa: BLE001 - one job's failure on the cluster is that file's failure
                res = Result(job.source, job.target, "failed", f"on the cluster: {type(exc).__name__}: {exc}")
            yield res._replace(source=job.source, target=job.target)
            if fail_fast and res.status == "failed":
                stop = True
            if stop:  # report what has finished, start nothing more
                client.cancel(list(jobs))
                jobs.clear()
                break
            yield from fill()
    finally:
        client.cancel(list(jobs))
        remove_stale(targets)  # a killed worker's temporaries (its jobs ran again elsewhere)


def _absolute(path):
    return path if path is None or str(path) == "-" else Path(os.path.abspath(path))


_TUNED = []


def _remote(work, source, target, settings: Settings) -> Result:
    """One job on a worker: the process settings once (:func:`cnnfilter.runtime.tune`), the batch's settings for
    the job."""
    if not _TUNED:
        from . import runtime

        runtime.tune()
        _TUNED.append(True)
    with settings.applied():
        return attempt(work, source, target)


__all__ = ["DaskRunner", "Job", "check_address"]
