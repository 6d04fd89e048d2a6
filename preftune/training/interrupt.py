"""Ctrl-C during training: the first interrupt asks the loop to save a checkpoint and stop; a second exits at once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any


class GracefulInterrupt:
    """Context manager that turns the first SIGINT into a flag (`requested`) and the second into an immediate exit (130).

    A SIGINT the process was started to ignore (`nohup`, some CI runners) stays ignored; on exit the handler found on
    entry is put back, whatever it was."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            sys.stderr.write("\npreftune: second interrupt: exiting now (the last complete checkpoint is intact)\n")
            sys.stderr.flush()
            os._exit(130)
        self.requested = True
        sys.stderr.write("\npreftune: interrupt: saving a checkpoint after this step, then stopping (press Ctrl-C again to exit at once)\n")
        sys.stderr.flush()

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
