"""cnnfilter.runtime: the settings of a process cnnfilter owns."""

import os
import subprocess
import sys

import pytest

from cnnfilter import runtime


def test_tune_sets_thread_defaults_but_the_users_win(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "9")
    runtime.tune()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "9"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_keeps_freed_blocks_in_the_heap():
    # in a fresh process: three 6 MiB blocks freed together and allocated again page-fault anew under glibc's
    # defaults (the heap's top is given back past twice the last block's size), and not after tune()
    code = """
import sys, resource
if sys.argv[1] == "1":
    from cnnfilter import runtime
    assert runtime.tune()
import numpy as np
def step():
    a, b, c = (np.ones(6 << 18, np.float32) for _ in range(3))
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = [int(subprocess.run([sys.executable, "-c", code, flag], env=env, capture_output=True, text=True,
                                 check=True).stdout) for flag in ("0", "1")]
    assert faults[1] < 100 < faults[0], faults


def test_tune_yields_to_the_users_malloc_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert runtime.tune() is False
