"""Atomic, hashed files on the storage volume.

Every byte a split writes goes through a `StagedFile`: a temp file beside the final name,
hashed while it is written, made durable and visible in one rename. A crash, a full disk or
an exception never leaves a partial file under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from splitcore.inputs import dump_json, open_regular_file


class StorageError(OSError):
    """A component could not be written or read back."""


class OutputLockedError(RuntimeError):
    """Another process is writing the same output files right now; retry once it is done."""


#: The longest file name most filesystems take (NAME_MAX).
_NAME_MAX = 255
#: What `tempfile.mkstemp` adds to a prefix: 8 random characters and the ".tmp" suffix.
_TEMP_TAIL = 8 + len(".tmp")


def hidden_name(name: str, suffix: str, reserve: int = 0) -> str:
    """`.{name}{suffix}`, shortened (keeping a hash of `name`) where it would not leave
    `reserve` characters under the file-name limit, so a long but valid final name never
    fails with ENAMETOOLONG on its temp or lock file."""
    full = f".{name}{suffix}"
    if len(full) + reserve <= _NAME_MAX:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f".{name[: _NAME_MAX - reserve - len(suffix) - 18]}~{digest}{suffix}"


def temp_prefix(final_name: str) -> str:
    """The prefix of every temp file of `final_name` (`.{final_name}.` where it fits)."""
    return hidden_name(final_name, ".", _TEMP_TAIL)


class HashingSink:
    """A write-only sink that hashes every byte on its way to disk.

    Hashing runs in a second thread on the very buffers being written (hashlib releases the
    GIL), so sha256 costs no extra pass and overlaps with the write; the digest is of exactly
    the bytes written.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.position = 0
        self.sha256: str | None = None  # set by `finish`
        self._sha256 = hashlib.sha256()
        # At most 4 chunks (64 MiB) wait for the hasher.
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=4)
        self._hasher = threading.Thread(target=self._hash, name="sha256", daemon=True)
        self._hasher.start()

    def _hash(self) -> None:
        while (data := self._queue.get()) is not None:
            self._sha256.update(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`, which the caller no longer changes."""
        view = memoryview(data).cast("B")
        self._queue.put(view)
        length = view.nbytes
        while view:
            view = view[os.write(self._fd, view) :]
        self.position += length

    def finish(self) -> str:
        """Wait for the hasher; `sha256` is then the digest of everything written."""
        if self.sha256 is None:
            self._queue.put(None)
            self._hasher.join()
            self.sha256 = self._sha256.hexdigest()
        return self.sha256


def fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _locked_temp_file(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path`, locked (`flock`) for as long as its writer lives.

    The lock is how a cleaner tells a live writer's temp file from a dead one's
    (`remove_abandoned`). A cleaner may have removed the file between its creation and the
    lock: then it is made again.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        try:
            _lock(fd, blocking=True)  # only a cleaner about to remove it can hold it, briefly
            if os.fstat(fd).st_nlink:
                return fd, Path(name)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _lock(fd: int, blocking: bool) -> bool:
    """Take an exclusive `flock` on `fd`; False if another holds it (or, non-blocking, if
    the filesystem cannot lock: then nobody can tell who owns the file)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return blocking
    return True


def remove_abandoned(temp: Path) -> bool:
    """Remove temp file `temp` if its writer is gone (its lock is free); True if removed.

    It is opened for writing: NFS grants an exclusive lock only on such a descriptor.
    """
    try:
        fd = os.open(temp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not _lock(fd, blocking=False):
            return False
        temp.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the lock of one set of output files (`{folder}/.{name}.lock`) while writing them.

    A second writer of the same files fails at once with `OutputLockedError` instead of
    interleaving with the first. The lock file is removed on the way out; only a killed
    writer leaves it, and the next writer takes it over.
    """
    path = folder / hidden_name(name, ".lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            if not _lock(fd, blocking=False):
                raise OutputLockedError(
                    f"another process is writing {name} in {folder} (it holds {path.name}); "
                    "two splits of the same model and split points cannot run at once"
                )
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed it as we opened it: take the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.lstat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class StagedFile:
    """A file written to a temp name beside its final one, waiting to be committed.

    `commit` makes it durable and visible (fsync, rename, fsync the folder); `abort` removes
    it. Until `commit`, nothing exists under the final name, whatever happens. The temp file
    is locked by its writer, so no cleaner removes it while it is being written.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd, self.temp = _locked_temp_file(path)
        self.sink = HashingSink(self._fd)

    @property
    def sha256(self) -> str:
        return self.sink.finish()

    def commit(self) -> None:
        try:
            self.sink.finish()
            os.fsync(self._fd)
            os.fchmod(self._fd, 0o644)
        except BaseException:
            self.abort()
            raise
        try:
            self.temp.replace(self.path)  # still locked: no cleaner takes it for abandoned
        except BaseException as error:
            self.abort()
            if isinstance(error, IsADirectoryError | NotADirectoryError):
                raise StorageError(
                    f"{self.path} exists and is a directory; remove it first"
                ) from None
            raise
        os.close(self._fd)
        self._fd = -1
        fsync_directory(self.path.parent)

    def abort(self) -> None:
        self.sink.finish()  # always stop the hasher thread
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[StagedFile]:
    """A `StagedFile` that is aborted if writing it raises; the caller commits it.

    Hashing may still be running when this returns: `commit` waits for it, so the next file
    can start streaming while the hasher catches up on this one.
    """
    staged = StagedFile(path)
    try:
        yield staged
    except BaseException:
        staged.abort()
        raise


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[HashingSink]:
    """Write `path` through a temp file in the same folder, fsync, then rename.

    A crash, a full disk or an exception never leaves a file under the final name: either the
    old file (if any) or the complete new one is there.
    """
    with staged_file(path) as staged:
        yield staged.sink
    staged.commit()


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Atomically write a JSON document (indented, keys in insertion order)."""
    with atomic_writer(path) as sink:
        sink.write((dump_json(document, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with os.fdopen(open_regular_file(path), "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
