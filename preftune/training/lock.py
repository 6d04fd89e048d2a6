"""One run per output folder: a lock file held (flock) for the whole run, released by the kernel even when the run is
killed, so a later run takes a dead run's folder over while a live one keeps it."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from ..errors import PreftuneError

LOCK = ".preftune.lock"


class RunLock:
    """`with RunLock(folder):` holds `folder/.preftune.lock`; a second holder gets a PreftuneError naming the run that has
    it (its pid, host, start time) and the fix. Where the OS has no flock (Windows), the lock is not taken."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.file: IO[str] | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no POSIX locks on this platform
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the run's lifetime
        except OSError as e:
            raise PreftuneError(f"output_dir {self.path.parent}: not writable ({e.strerror or e}). Fix: choose a folder you can write to.") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = _holder(f.read())
            f.close()
            raise PreftuneError(f"output_dir {self.path.parent}: another preftune run is using it ({holder}). Fix: wait for that run to end, "
                                "or set another output_dir.") from None
        f.seek(0)
        previous = _holder(f.read())
        if previous != "unknown":
            import logging

            logging.getLogger("preftune.training").info("output_dir %s: taking over the lock of a run that is no longer running (%s)",
                                                        self.path.parent, previous)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()  # an unlocked, empty file: nobody holds the folder
            self.file.close()  # closing releases the flock
            self.file = None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "unknown"
