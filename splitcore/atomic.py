"""Atomic, hashed files on the storage volume.

Every byte a split writes goes through a `StagedFile`: a temp file beside the final name,
hashed while it is written, made durable and visible in one rename. A crash, a full disk or
an exception never leaves a partial file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from splitcore.formats import FileSpan


class StorageError(OSError):
    """A component could not be written or read back."""


class HashingSink:
    """A write-only sink that hashes every byte on its way to disk.

    Hashing runs in a second thread on the very buffers being written (hashlib releases the
    GIL), so sha256 costs no extra pass and overlaps with the kernel's copy.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.position = 0
        self.sha256: str | None = None  # set by `finish`
        self._sha256 = hashlib.sha256()
        self._queue: queue.Queue[tuple[bytes | memoryview, FileSpan | None] | None] = queue.Queue(
            maxsize=16
        )
        self._hasher = threading.Thread(target=self._hash, name="sha256", daemon=True)
        self._hasher.start()

    def _hash(self) -> None:
        while (item := self._queue.get()) is not None:
            data, span = item
            self._sha256.update(data)
            if span is not None:
                span.release(len(data))  # keep the process's RSS flat on huge models

    def write(self, data: bytes | memoryview, span: FileSpan | None = None) -> None:
        """Append `data`; bytes that lie in a file (`span`) are copied by the kernel."""
        self._queue.put((data, span))
        length = len(data)
        if span is not None:
            done = 0
            while done < length:  # sendfile: an in-kernel copy, like `cp`, across filesystems
                copied = os.sendfile(self._fd, span.fd, span.offset + done, length - done)
                if copied == 0:
                    raise StorageError(f"the source file ended early (fd {span.fd})")
                done += copied
        else:
            view = memoryview(data).cast("B")
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


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A file written to a temp name beside its final one, waiting to be committed.

    `commit` makes it durable and visible (fsync, rename, fsync the folder); `abort` removes
    it. Until `commit`, nothing exists under the final name, whatever happens.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        self.temp = Path(temp_name)
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
        os.close(self._fd)
        self._fd = -1
        self.temp.replace(self.path)
        _fsync_directory(self.path.parent)

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
        sink.write((json.dumps(document, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
