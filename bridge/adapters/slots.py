"""Per-process state that outlives the process: one claimed slot per adapter instance.

Some systems count server sessions against a licence (OnSite's seats). A worker killed
with SIGKILL cannot log out, so its session keeps a seat until the server idles it out,
and a crash loop runs out of seats. A slot lets the process that replaces it pick the
session up instead: each adapter instance claims the lowest free slot under its state
directory by taking an exclusive `flock` on it, which the kernel releases however the
process ends. The next process to claim that slot reads what its predecessor stored.

Slots are local to a machine (or a pod's volume); a process elsewhere starts afresh,
which is what the server's idle timeout is for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

MAX_SLOTS = 256


class SlotsExhausted(RuntimeError):
    pass


class Slot:
    """An exclusively held directory of small values, named by key."""

    def __init__(self, directory: Path, index: int, fd: int) -> None:
        self.directory = directory
        self.index = index
        self._fd: int | None = fd
        # A forked child inherits the descriptor, and with it the lock: the slot still
        # belongs to the process that claimed it, never to its children.
        self._pid = os.getpid()

    @classmethod
    def claim(cls, root: Path) -> Slot:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for index in range(MAX_SLOTS):
            lock = root / f"slot-{index}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            directory = root / f"slot-{index}"
            directory.mkdir(exist_ok=True, mode=0o700)
            return cls(directory, index, fd)
        raise SlotsExhausted(f"all {MAX_SLOTS} slots under {root} are held by live processes")

    @property
    def held(self) -> bool:
        return self._fd is not None and self._pid == os.getpid()

    def _path(self, key: str) -> Path:
        if not key.replace("_", "").isalnum():
            raise ValueError(f"slot keys are plain names, not {key!r}")
        return self.directory / key

    def read(self, key: str) -> str | None:
        if not self.held:
            return None
        try:
            return self._path(key).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def write(self, key: str, value: str) -> None:
        if not self.held:
            return
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        # Session ids are credentials: owner-only, and replaced atomically so a kill mid-write
        # leaves the old value or the new one, never half of either.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value)
        tmp.replace(path)

    def clear(self, key: str) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            # In a child, closing its copy leaves the claimer's lock in place.
            os.close(self._fd)
        self._fd = None
