"""Exclusive locks on folders, so that two processes never write the same build or workdir.

A lock is an OS file lock (`flock`) on a file inside the folder, holding the owner's host, pid and
start time for the message a second process sees. The kernel drops the lock when its process dies,
however it dies, so a crash leaves no stale lock behind; the file itself stays and is reused.
(`flock` is local to one machine: on a shared network file system, start one job per folder.)
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def exclusive(folder: str, name: str, what: str, *, wait: bool = False):
    """Holds the lock `<folder>/<name>` for the body of the `with`.

    Args:
      folder: the folder to protect (created if missing).
      name: the lock file's name inside it.
      what: what the lock protects, for the message, e.g. "the workdir runs/x".
      wait: block until the other process releases the lock, instead of raising.

    Raises:
      LockHeld: naming the other process, when `wait` is False and the lock is taken.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "a+") as f:
        flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(f, flags)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            raise LockHeld(
                f"{what} is in use by {owner} (lock file {path}). Wait for it to finish or stop "
                "it; a crashed process releases the lock by itself."
            ) from None
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
