"""cnnfilter.limits: sizes, budgets, regular files only, capped reads, printable names."""

from __future__ import annotations

import os

import numpy as np
import pytest

import cnnfilter
from cnnfilter import limits
from cnnfilter.limits import LimitError


@pytest.mark.parametrize(("text", "n"), [("512MiB", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
                                         ("1000", 1000), ("64k", 64 << 10), (" 3 mb ", 3 << 20)])
def test_parse_bytes(text, n):
    assert limits.parse_bytes(text) == n


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1Q", "1e9"])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError, match="is not a size"):
        limits.parse_bytes(text)


def test_fmt_bytes():
    assert [limits.fmt_bytes(n) for n in (5, 3 << 10, 512 << 20, 6.5 * (1 << 30))] == \
        ["5 bytes", "3 KiB", "512 MiB", "6.5 GiB"]


def test_memory_limit_scopes_and_environment(monkeypatch):
    monkeypatch.setenv("CNNFILTER_MAX_MEMORY", "1GiB")
    assert limits.max_memory() == 1 << 30
    with limits.memory_limit(1000):
        assert limits.max_memory() == 1000
        with pytest.raises(LimitError, match="needs about 1.95 KiB, over the memory limit of 1000 bytes"):
            limits.check_memory(2000, "x")
    assert limits.max_memory() == 1 << 30
    monkeypatch.delenv("CNNFILTER_MAX_MEMORY")
    assert limits.max_memory() == int(limits.physical_memory() * limits.MEMORY_FRACTION)


def test_filters_and_pooling_refuse_before_allocating():
    """A padding, dilation or window whose output or work exceeds the budget is refused with the estimate."""
    img = np.zeros((32, 32), np.uint8)
    with limits.memory_limit(64 << 20):
        with pytest.raises(LimitError, match=r"filtering a 32x32 image .* needs about [\d.]+ GiB, over the memory"):
            cnnfilter.correlate2d(img, np.ones((3, 3)), padding=20000)
        with pytest.raises(LimitError, match="over the memory limit"):
            cnnfilter.correlate2d(img, np.ones((255, 255)), dilation=10000)
    with pytest.raises(LimitError, match="over the work limit"):
        cnnfilter.pool2d(np.zeros((400, 400)), 4000, stride=1, padding=2000)
    assert cnnfilter.correlate2d(img, np.ones((3, 3)), padding=2).shape == (34, 34)


def test_open_regular_refuses_fifos_and_devices(tmp_path):
    os.mkfifo(tmp_path / "p")
    for path in (tmp_path / "p", "/dev/zero"):
        with pytest.raises(LimitError, match="not a regular file"):
            limits.open_regular(path)
    with pytest.raises(IsADirectoryError):
        limits.open_regular(tmp_path)
    (tmp_path / "f").write_bytes(b"abc")
    with limits.open_regular(tmp_path / "f") as fh:
        assert fh.read() == b"abc"


def test_read_file_and_read_capped(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert limits.read_file(tmp_path / "f", 100, "f") == b"x" * 100
    with pytest.raises(LimitError, match="is 100 bytes, larger than 99 bytes"):
        limits.read_file(tmp_path / "f", 99, "f")
    with open("/dev/zero", "rb") as fh, pytest.raises(LimitError, match="larger than 1 KiB"):
        limits.read_capped(fh, 1024, "standard input")


def test_printable_and_shorten():
    assert limits.printable("a\nb\x1b") == "a\\x0ab\\x1b"
    assert limits.shorten("x" * 100, 10) == "x" * 9 + "…"
