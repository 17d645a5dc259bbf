"""cnnfilter.outputs: the output policy, contained paths, safe names, atomic writes and their temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnfilter.outputs import (OutputError, OutputPolicy, atomic_file, inside, quoted, remove_stale, resolve,
                               safe_part, stale_temporaries)


def test_policy_refuses_inputs_other_outputs_and_existing_files(tmp_path):
    """An input or a second claim of one path is a usage error; an existing file needs overwrite; a missing folder
    and a folder target are failures; the check names what was refused."""
    (tmp_path / "in.png").write_bytes(b"x")
    (tmp_path / "old.npy").write_bytes(b"x")
    policy = OutputPolicy()
    policy.add_input(tmp_path / "in.png")
    with pytest.raises(OutputError, match="--raw .* is an input of this command") as err:
        policy.claim(tmp_path / "sub" / ".." / "in.png", "--raw")
    assert err.value.usage
    policy.claim(tmp_path / "out.png", "the output image")
    with pytest.raises(OutputError, match="is also the output image") as err:
        policy.claim(tmp_path / "out.png", "--raw")
    assert err.value.usage
    with pytest.raises(OutputError, match="exists; use --overwrite") as err:
        policy.claim(tmp_path / "old.npy", "--raw")
    assert not err.value.usage
    with pytest.raises(OutputError, match="does not exist"):
        policy.claim(tmp_path / "nowhere" / "x.npy")
    with pytest.raises(OutputError, match="it is a folder"):
        OutputPolicy(overwrite=True).claim(tmp_path)
    assert OutputPolicy(overwrite=True).claim(tmp_path / "old.npy") == (tmp_path / "old.npy").resolve()


def test_policy_sees_through_symlinks_to_an_input(tmp_path):
    """A link to an input is the input."""
    (tmp_path / "in.png").write_bytes(b"x")
    os.symlink("in.png", tmp_path / "link.png")
    policy = OutputPolicy(overwrite=True)
    policy.add_input(tmp_path / "in.png")
    with pytest.raises(OutputError, match="is an input"):
        policy.claim(tmp_path / "link.png")


def test_a_symlink_loop_is_an_output_error(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OutputError, match="symbolic link loop"):
        resolve(tmp_path / "loop" / "x.png")


def test_inside_refuses_dotdot_and_links_out_of_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "link")
    assert inside(tmp_path / "out" / "a" / "x.png", tmp_path / "out") == tmp_path / "out" / "a" / "x.png"
    for bad in ("../x.png", "a/../../x.png", "link/x.png"):
        with pytest.raises(OutputError, match="outside the output folder"):
            inside(tmp_path / "out" / bad, tmp_path / "out")


@pytest.mark.parametrize(("name", "safe"), [("a.png", "a.png"), (".", "_."), ("..", "_.."), ("", "_"),
                                            (".hidden", "_.hidden"), ("a/b", "a_b"), ("a\nb\x1b[2J", "a_b_[2J"),
                                            ("a\\b", "a_b")])
def test_safe_part(name, safe):
    assert safe_part(name) == safe


def test_quoted_names_cannot_forge_lines():
    assert "\n" not in quoted("a\nfailed: b.png") and quoted("a\nb") == "'a\\nb'"


def test_atomic_file_temporary_fits_a_250_byte_name_and_is_removed_on_failure(tmp_path):
    target = tmp_path / ("n" * 246 + ".png")
    seen = []
    with atomic_file(target) as fh:
        seen = [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
        fh.write(b"data")
    assert target.read_bytes() == b"data" and len(seen) == 1 and len(seen[0]) < 100
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "y.png") as fh:
        fh.write(b"half")
        raise RuntimeError
    assert not (tmp_path / "y.png").exists() and not list(tmp_path.glob("*.part"))


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    """A temporary whose writer is alive (this process) stays; one whose writer has exited goes."""
    target = tmp_path / "x.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    with atomic_file(target) as fh:
        live = next(p for p in tmp_path.iterdir() if p.name.endswith(".part"))
        stale = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{dead}-"))
        stale.write_bytes(b"left by a killed run")
        assert stale_temporaries(tmp_path) == [stale]
        assert remove_stale([target]) == 1
        assert live.exists() and not stale.exists()
        fh.write(b"ok")
    assert target.read_bytes() == b"ok"


def test_writable_folder_is_checked(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere but on read-only file systems")
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="not writable"):
        OutputPolicy().claim(tmp_path / "ro" / "x.png")
    Path(tmp_path / "ro").chmod(0o755)


def test_resolver_equals_path_resolve(tmp_path):
    """Resolver (each folder resolved once) gives Path.resolve's answer for plain files, missing files, linked
    files, files in linked folders and paths through '..'."""
    from cnnfilter.outputs import Resolver

    real = tmp_path / "real"
    real.mkdir()
    (real / "a.png").write_bytes(b"x")
    (tmp_path / "linkdir").symlink_to(real)
    (real / "link.png").symlink_to(tmp_path / "elsewhere.png")
    (tmp_path / "elsewhere.png").write_bytes(b"y")
    r = Resolver()
    for p in (real / "a.png", real / "missing.png", real / "link.png", tmp_path / "linkdir" / "a.png",
              tmp_path / "linkdir" / ".." / "real" / "a.png", real / ".", real / ".."):
        assert r(p) == p.resolve(), p
