"""The rules of a run directory: what rdgraph may create, replace and lock.

* Every run directory rdgraph creates carries a marker file, :data:`MARKER`. ``--overwrite``
  replaces only a directory with that marker, and never the current directory or one of its
  ancestors, the home directory, ``/``, a mount point or a symlink: anything else is refused
  before a single file is touched. Replacement renames the old directory aside first and
  deletes it only once the new one is in place, so a failure never leaves a half-deleted
  directory behind a refusal.
* One process per run directory: rank 0 holds an OS lock (``flock``) on :data:`LOCK` for the
  whole life of a run, a resume or a sweep case. A second process is refused with the
  holder's PID and host. The OS drops the lock when its process dies, so a killed run never
  blocks its own resume.

Every decision is taken on rank 0 and broadcast, so all ranks fail alike.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
from pathlib import Path

from rdgraph.errors import EnvironmentFailure, InputError, RunDirectoryInUse

__all__ = [
    "LOCK",
    "MARKER",
    "RunDirectory",
    "check_path_name",
    "is_environment_error",
    "lock_directory",
    "mark",
    "open_run_directory",
    "refusal",
    "unique_suffix",
]

MARKER = ".rdgraph-run"
LOCK = ".rdgraph-lock"
_MARKER_TEXT = "This directory was created by rdgraph; `rdgraph run --overwrite` may replace it.\n"

# OS errors that say the machine, not the input, is at fault: exit status 5.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.ENOMEM, errno.EIO, errno.EFBIG}


def is_environment_error(error: BaseException) -> bool:
    """Disk full, read-only file system, permission denied, I/O error or out of memory."""
    return isinstance(error, MemoryError) or (
        isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS)


def unique_suffix() -> str:
    """A name part no other process uses: the PID and a random token."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _is_mount(path: Path) -> bool:
    return os.path.ismount(path)


def check_path_name(path: Path, what: str = "output directory") -> None:
    """Refuse names that cannot be written into the run's text files (UTF-8) or are empty."""
    text = os.fspath(path)
    if text == "":
        raise InputError(f"{what} is empty; name a directory (e.g. --out results/run1)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{what} {text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8; "
            "choose a name in UTF-8") from None


def refusal(path: Path) -> str | None:
    """Why ``path`` must not be replaced by ``--overwrite``, or ``None`` if it may be.

    Only a real directory (not a symlink) that carries :data:`MARKER`, and is none of the
    current directory, its ancestors, the home directory, ``/`` and a mount point.
    """
    name = repr(os.fspath(path))
    if path.is_symlink():
        return f"{name} is a symbolic link; name the directory it points to, or another --out"
    real = path.resolve()
    if real == Path(real.anchor):
        return f"{name} is the root directory"
    try:
        if real == Path.home().resolve():
            return f"{name} is the home directory"
    except (KeyError, RuntimeError):  # no home directory known: nothing to compare with
        pass
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        return f"{name} is the current directory or one of its parents"
    if _is_mount(real):
        return f"{name} is a mount point"
    if not (real / MARKER).is_file():
        return (f"{name} was not created by rdgraph (it has no {MARKER} marker); "
                "delete it yourself or choose another --out")
    return None


def mark(directory: Path) -> None:
    """Write the marker that makes ``directory`` a run directory rdgraph may replace."""
    marker = Path(directory) / MARKER
    if not marker.exists():
        marker.write_text(_MARKER_TEXT, encoding="utf-8")


class _Lock:
    """An ``flock`` on ``directory/LOCK`` held through an open file descriptor (one rank)."""

    def __init__(self, directory: Path):
        import fcntl

        self.directory = Path(directory)
        path = self.directory / LOCK
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            self._fd = None
            raise RunDirectoryInUse(
                f"run directory {str(self.directory)!r} is in use by another rdgraph process "
                f"({holder or 'holder unknown'}); wait for it to end, or choose another "
                "--out") from None
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise
        # Who holds it, for the message a second process prints; emptied on release, so a
        # run leaves the file as it found it.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # a read-only or full file system: the lock goes all the same
            pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def lock_directory(directory: Path) -> _Lock:
    """Lock an existing run directory on this process (rank 0 only).

    Raises:
        RunDirectoryInUse: Another process holds it.
        OSError: The lock file cannot be created (read-only directory, permissions).
    """
    return _Lock(directory)


class RunDirectory:
    """A run directory held by this run: its path on every rank, its lock on rank 0.

    Release it (or use it as a context manager) when the run ends; a process that dies
    releases it through the OS.
    """

    def __init__(self, path: Path, lock: _Lock | None, comm):
        self.path = Path(path)
        self._lock = lock
        self.comm = comm

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _unique_default(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist yet."""
    candidate, k = path, 1
    while candidate.exists() or candidate.is_symlink():
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    return candidate


def _create(target: Path, overwrite: bool, explicit: bool, resume: bool) -> tuple[Path, _Lock]:
    """Rank 0's part of :func:`open_run_directory`."""
    if resume:
        if not target.is_dir():
            raise InputError(f"--resume {str(target)!r}: no such run directory")
        return target, _Lock(target)
    if not explicit and (target.exists() or target.is_symlink()):
        target = _unique_default(target)
    if target.is_symlink() and overwrite:
        raise InputError(f"--overwrite refused: {refusal(target)}")
    if target.exists() and not target.is_dir():
        raise InputError(f"output directory {str(target)!r} exists and is not a directory")
    if not target.is_dir():
        target.mkdir(parents=True)
        mark(target)
        return target, _Lock(target)
    if not any(target.iterdir()):
        # An empty directory (one the user prepared, or the current one): used as it is.
        lock = _Lock(target)
        mark(target)
        return target, lock
    if not overwrite:
        raise InputError(f"output directory {str(target)!r} exists and is not empty; pass "
                         "--overwrite to replace it, or choose another --out")
    reason = refusal(target)
    if reason is not None:
        raise InputError(f"--overwrite refused: {reason}; nothing was changed")
    # Lock the old directory first: a process still running in it refuses the replacement.
    old_lock = _Lock(target)
    aside = target.with_name(f".{target.name}.rdgraph-replaced-{unique_suffix()}")
    fresh = target.with_name(f".{target.name}.rdgraph-new-{unique_suffix()}")
    try:
        # Build the new directory under a private name, locked before anyone can see it,
        # then swap it in: the target never exists half-deleted.
        fresh.mkdir()
        mark(fresh)
        lock = _Lock(fresh)
        os.rename(target, aside)
        try:
            os.rename(fresh, target)
        except OSError:
            os.rename(aside, target)  # put the old one back: nothing changed
            raise
    except BaseException:
        if fresh.exists():
            shutil.rmtree(fresh, ignore_errors=True)  # ours, created above
        old_lock.release()
        raise
    lock.directory = target
    old_lock.release()
    # Only now, with the new directory in place, does the old one go.
    shutil.rmtree(aside, ignore_errors=True)
    return target, lock


def open_run_directory(
    path: str | Path,
    comm,
    *,
    overwrite: bool = False,
    explicit: bool = True,
    resume: bool = False,
) -> RunDirectory:
    """Create, replace or (with ``resume``) reopen a run directory and lock it (collective).

    Args:
        path: The requested directory.
        comm: The run's communicator; rank 0 decides and holds the lock.
        overwrite: Replace an existing non-empty directory, if it is a run directory that
            may be replaced (see :func:`refusal`).
        explicit: The user named the directory. If not, an existing one is never touched:
            a fresh sibling name is chosen instead.
        resume: Reopen an existing run directory as it is (nothing is created or replaced).

    Raises:
        InputError: A refused directory (exists and not empty, not a run directory, in use by
            another process), raised on every rank.
        EnvironmentFailure: The file system refused (read-only, permission denied, full).
    """
    result, error, kind = None, None, None
    lock = None
    if comm.rank == 0:
        target = Path(path)
        try:
            check_path_name(target, "--resume directory" if resume else "output directory")
            target, lock = _create(target, overwrite, explicit, resume)
            result = str(target)
        except RunDirectoryInUse as e:
            error, kind = str(e), "in-use"
        except InputError as e:
            error, kind = str(e), "input"
        except OSError as e:
            what = "--resume directory" if resume else "output directory"
            error = f"{what} {str(target)!r} cannot be {'locked' if resume else 'created'}: {e}"
            kind = "environment" if is_environment_error(e) else "input"
            found = sorted(target.glob("checkpoint-*.npz")) if resume else []
            if found and kind == "environment":
                error += (f"; nothing was changed, and the last checkpoint is {found[-1]}: "
                          "resume once the directory is writable")
    result, error, kind = comm.bcast((result, error, kind), root=0)
    if error is not None:
        raise {"in-use": RunDirectoryInUse, "input": InputError,
               "environment": EnvironmentFailure}[kind](error)
    return RunDirectory(Path(result), lock, comm)
