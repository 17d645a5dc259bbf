"""Every file cnnfilter writes goes through here: one output policy, atomic writes, and temporaries that only their
own process may remove while it lives.

The policy (:class:`OutputPolicy`), checked before any work is done: an output is never an input of the command,
never another output of the same command, never an existing file unless the user
said ``--overwrite``, and its folder exists. Writing is atomic (:func:`atomic_file`): a temporary in the target's
folder, renamed over the target once complete. A temporary's name carries a hash of its target's name and the
writer's process id, so a later run removes the leftovers of killed runs (owner gone) and never those of a run
still writing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .limits import printable


class OutputError(Exception):
    """An output the policy refuses. ``usage`` is True when the command line contradicts itself (an output that
    is an input, or two outputs that are one file): exit code 2; else (it exists, its folder is missing) 1."""

    def __init__(self, message: str, *, usage: bool = False, exists: bool = False):
        super().__init__(message)
        self.usage = usage
        self.exists = exists  # only because the target exists: --skip-existing may skip it


def quoted(path) -> str:
    """A path for a message: quoted as Python's repr does, so a newline or an escape in a file name is shown as
    ``\\n`` or ``\\x1b`` and cannot forge a line of output or move the terminal's cursor."""
    return repr(str(path))


def about(path, message: str) -> str:
    """``message`` as it is when it already names ``path`` (quoted), else ``'path': message``."""
    return message if quoted(path) in message else f"{quoted(path)}: {message}"


def resolve(path) -> Path:
    """``path`` made absolute with symlinks followed as far as they exist; a loop or an impossible name raises
    OutputError naming it."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise OutputError(f"cannot use {quoted(path)}: {_why(exc)}") from None


class Resolver:
    """:func:`resolve` for many paths at once (a batch's inputs and outputs): each folder is resolved once and a
    file's name appended to it, unless the name is itself a symbolic link (or ``.``/``..``), which is resolved in
    full. Valid while the folders do not change: make one per planning, never keep one."""

    def __init__(self):
        self._folders: dict[str, Path] = {}

    def __call__(self, path) -> Path:
        p = Path(path)
        name = p.name
        try:
            link = p.is_symlink()
        except OSError as exc:
            raise OutputError(f"cannot use {quoted(path)}: {_why(exc)}") from None
        if name in ("", ".", "..") or link:
            return resolve(p)
        parent = str(p.parent)
        folder = self._folders.get(parent)
        if folder is None:
            folder = self._folders[parent] = resolve(p.parent)
        return folder / name


def _why(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError):
        return "a symbolic link loop"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@dataclass
class OutputPolicy:
    """What a command may write. ``input_files`` are the resolved files the command reads. :meth:`claim` each
    output before any work."""

    overwrite: bool = False
    input_files: set = field(default_factory=set)
    claimed: dict = field(default_factory=dict)  # resolved path -> what it is ("the model", "--plot", ...)
    resolve: Callable[[object], Path] = resolve  # a Resolver while planning a batch

    def add_input(self, path) -> None:
        self.input_files.add(resolve(path))

    def conflict(self, target, what: str = "output", *, new_folder: bool = False,
                 exists_hint: str = "use --overwrite") -> OutputError | None:
        """The reason ``target`` may not be written, or None. Records nothing. ``new_folder``: a missing folder
        will be created (a batch's ``-o DIR`` tree)."""
        path = self.resolve(target)
        shown = quoted(target)
        if path in self.input_files:
            return OutputError(f"{what} {shown} is an input of this command; it would be overwritten", usage=True)
        if path in self.claimed:
            return OutputError(f"{what} {shown} is also {self.claimed[path]}: give them different names",
                               usage=True)
        err = None if new_folder and not path.parent.exists() else folder_problem(target)
        if err is not None:
            return OutputError(err)
        try:  # the target as the kernel sees it (it follows /proc/self/fd links that resolve() cannot)
            st = os.stat(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return OutputError(f"cannot write {shown}: {_why(exc)}")
        if stat.S_ISDIR(st.st_mode):
            return OutputError(f"cannot write {shown}: it is a folder")
        if not stat.S_ISREG(st.st_mode):
            return OutputError(f"cannot write {shown}: it exists and is not a regular file (a device, pipe or socket)")
        if not self.overwrite:
            return OutputError(f"{shown} exists; {exists_hint}", exists=True)
        return None

    def report_conflict(self, folder, root) -> OutputError | None:
        """Why the report folder ``folder`` (inside ``root``) may not be written, or None: it leaves ``root``, a file
        is in its place, it holds an input, or it is not empty (without ``overwrite``) or holds a link, a pipe or
        a device. Records nothing."""
        try:
            path = inside(folder, root)
            held = next((p for p in self.input_files if p.is_relative_to(path)), None)
            if held is not None:
                return OutputError(f"the report folder {quoted(folder)} holds an input, {quoted(held)}")
            if path.exists() and not path.is_dir():
                return OutputError(f"cannot write the report folder {quoted(folder)}: a file is in its place")
            if path.exists() and any(path.iterdir()):
                if not self.overwrite:
                    return OutputError(f"{quoted(folder)} exists; use --overwrite or --skip-existing", exists=True)
                odd = next((p for p in path.rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())), None)
                if odd is not None:
                    return OutputError(f"the report folder {quoted(folder)} holds {quoted(odd)}, a link, pipe or "
                                       "device; remove it")
        except OutputError as exc:
            return exc
        except OSError as exc:
            return OutputError(f"{_why(exc)}: {quoted(folder)}")
        return None

    def claim(self, target, what: str = "output") -> Path:
        """Check ``target`` (raises OutputError) and record it as ``what``; remove stale temporaries of killed
        runs that wrote it. Returns the resolved path."""
        err = self.conflict(target, what)
        if err is not None:
            raise err
        path = resolve(target)
        self.claimed[path] = what
        remove_stale(path)
        return path


def folder_problem(target) -> str | None:
    """Why ``target``'s folder cannot take a new file (missing, not writable, a read-only file system), or None."""
    folder = Path(target).parent
    shown = quoted(str(folder) if str(folder) else ".")
    if not folder.is_dir():
        return f"cannot write {quoted(target)}: folder {shown} does not exist"
    if not os.access(folder, os.W_OK):  # also a read-only file system, for root too
        return f"cannot write {quoted(target)}: folder {shown} is not writable"
    return None


TAG = ".cnnf.part"
_TEMP = re.compile(r"^\..{0,32}\.([0-9a-f]{8})-(\d+)-[a-z0-9_]+" + re.escape(TAG) + "$", re.S)


def _key(name: str) -> str:
    return f"{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}"


def _temp_prefix(name: str) -> str:
    """``.SHORT.KEY-PID-``: at most 32 characters of the name (so a 250-byte name still has a temporary that
    fits the file system's 255), a hash of the whole name, and the writer's process id."""
    short = printable(name)[:32].replace("\\", "_")
    return f".{short}.{_key(name)}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # another user's process, or a pid we cannot ask about: assume it is alive
    try:  # a zombie (killed, not yet reaped) writes nothing more
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def remove_stale(targets) -> int:
    """Remove the temporaries of ``targets`` (a path or an iterable of paths) whose writer process is gone (a
    killed run); each folder is listed once. Returns how many were removed."""
    targets = [Path(targets)] if isinstance(targets, (str, os.PathLike)) else [Path(t) for t in targets]
    by_folder: dict[Path, set[str]] = {}
    for t in targets:
        by_folder.setdefault(t.parent, set()).add(t.name)
    return sum(_unlink(stale_temporaries(folder, names)) for folder, names in by_folder.items())


def remove_stale_in(folder) -> int:
    """Remove every temporary in ``folder`` whose writer process is gone; returns how many."""
    return _unlink(stale_temporaries(folder))


def stale_temporaries(folder, names: set[str] | None = None) -> list[Path]:
    """The temporaries in ``folder`` (of the targets named ``names``, or all) whose writer process is gone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    keys = None if names is None else {_key(n) for n in names}
    out = []
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or _alive(int(m.group(2))):
            continue
        if keys is not None and m.group(1) not in keys:
            keys |= _legacy_keys(names)  # a temporary of a version that hashed names with blake2b
            if m.group(1) not in keys:
                continue
        out.append(Path(entry.path))
    return out


def _legacy_keys(names) -> set[str]:
    import hashlib

    return {hashlib.blake2b(n.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest() for n in names}


def _unlink(paths: list[Path]) -> int:
    removed = 0
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


class WriteError(Exception):
    """An output that cannot be written (folder missing, permission, read-only file system, disk full)."""


@contextlib.contextmanager
def atomic_file(target):
    """Write ``target`` through a temporary file in its folder, renamed over it only once complete: a killed run
    never leaves half a file under the target's name. Keeps an existing target's mode, else the umask's."""
    path = Path(target)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = _create_temporary(folder, _temp_prefix(path.name))
    except OSError as exc:
        raise WriteError(f"cannot write {quoted(path)}: {_why(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {quoted(path)}: {_why(exc)}") from None
        raise


def _create_temporary(folder: Path, prefix: str) -> tuple[int, str]:
    """A new file ``folder/PREFIX<random>.cnnf.part`` created exclusively (mode 0o600, as mkstemp makes it), as
    ``(descriptor, path)``: tempfile's rule without importing tempfile (4 ms of a one-off command)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(folder, prefix + os.urandom(6).hex() + TAG)
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {quoted(folder)}")


@functools.cache
def _default_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp makes 0o600 files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def clean(text: str) -> str:
    """Separators and control characters in a name become ``_``."""
    return _UNSAFE.sub("_", text)


def safe_part(name: str) -> str:
    """One path component made safe to write: separators and control characters become ``_``; ``.``, ``..``,
    an empty name and a leading dot (a hidden file) get a ``_`` in front."""
    name = clean(name)
    if name in ("", ".", "..") or name.startswith("."):
        name = "_" + name
    return name


def inside(target, root, resolver=resolve) -> Path:
    """``target`` resolved, checked to lie under ``root`` (resolved): symbolic links and ``..`` cannot take an
    output out of the folder the user named. Raises OutputError. ``resolver``: a planning's :class:`Resolver`,
    which resolves each folder once."""
    path, base = resolver(target), resolver(root)
    if not path.is_relative_to(base):
        raise OutputError(f"output {quoted(target)} would be written outside the output folder {quoted(root)}")
    return path
