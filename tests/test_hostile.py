"""The hostile corpus (tests/hostile.py), each case in its own process: the exit code, one clear line, bounded
memory and time, nothing written outside the output folder, no input changed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .hostile import CASES, prepare, run_case

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FIFOs, /dev/full and ru_maxrss in KiB: Linux")


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
            elif not p.exists() or p.is_symlink():
                out[str(p.relative_to(root))] = "link"
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case, tmp_path):
    """Exit code and message as expected, one line per problem, no traceback, memory and time bounded, no file
    written outside the allowed folders, no input changed."""
    prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    code, err, mb, seconds = run_case(case, tmp_path)
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == case.code, err
    assert case.says in err, err
    if case.lines is not None:
        assert len(err.splitlines()) == case.lines, err
    assert mb <= case.max_mb, f"peak {mb:.0f} MiB"
    assert seconds <= case.max_s, f"{seconds:.1f} s"
    after = _snapshot(tmp_path)
    for name, digest in before.items():
        assert after.get(name) == digest, f"{name} changed or vanished"
    new = [n for n in after if n not in before]
    allowed = [w for w in case.writes]
    outside = [n for n in new if not any(n == w or n.startswith(w.rstrip("/") + "/") or w == "." for w in allowed)]
    assert not outside, outside
    assert not [n for n in new if n.endswith(".part")], new
    if case.files is not None:
        assert len(new) == case.files, new


def _photos(folder: Path, n: int, side: int = 400) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(folder / f"{i:03d}.png")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_parent_is_killed(tmp_path, sig):
    """Killing a batch's parent process (SIGKILL or SIGTERM) ends its workers within seconds; a resumed run with
    --skip-existing finishes the job and leaves no temporary file."""
    _photos(tmp_path / "in", 40)
    cmd = [sys.executable, "-m", "cnnfilter", "convolve", str(tmp_path / "in"), "-k", "gaussian", "--sigma", "3",
           "-o", str(tmp_path / "out"), "-j", "2", "-q", "--overwrite"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and (len(workers) < 2 or not list((tmp_path / "out").glob("*.png"))):
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    res = subprocess.run([*cmd[:-1], "--skip-existing"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 40
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_worker_costs_only_its_own_file(tmp_path, sig):
    """SIGKILL or SIGTERM to one worker in mid-batch: every file is still written (the files it held are retried
    once, alone), and the exit code is 0."""
    _photos(tmp_path / "in", 30)
    cmd = [sys.executable, "-m", "cnnfilter", "convolve", str(tmp_path / "in"), "-k", "gaussian", "--sigma", "3",
           "-o", str(tmp_path / "out"), "-j", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and (len(workers) < 2 or len(list((tmp_path / "out").glob("*.png"))) < 2):
        workers = _children(proc.pid)
        time.sleep(0.02)
    os.kill(workers[0], sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert len(list((tmp_path / "out").glob("*.png"))) == 30


def test_two_batches_into_one_folder_keep_each_others_temporaries(tmp_path):
    """Two runs writing into the same folder at once: neither removes the other's temporary files, so neither
    reports a false failure."""
    _photos(tmp_path / "a", 12, 300)
    _photos(tmp_path / "b", 12, 300)
    for p in (tmp_path / "b").iterdir():
        p.rename(p.with_name("b" + p.name))
    out = tmp_path / "out"
    cmds = [[sys.executable, "-m", "cnnfilter", "convolve", str(tmp_path / d), "-k", "box", "-o", str(out),
             "-j", "1", "-q", "--overwrite"] for d in ("a", "b")]
    for _ in range(3):
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
    assert len(list(out.glob("*.png"))) == 24
