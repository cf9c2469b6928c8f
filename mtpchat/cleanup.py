"""Leaving nothing behind: atomic writes whose temp file goes away on every failure, and
SIGTERM/SIGHUP turned into an exception so that `finally` clauses clean up as they do on Ctrl-C."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; raised in the main thread like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum   # what a shell reports for a process killed by the signal

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


@contextmanager
def terminate_as_exception():
    """Inside the block SIGTERM and SIGHUP raise Terminated (once: a second signal during the
    clean-up is ignored, so the clean-up finishes). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and an atomic rename. On any
    failure (disk full, a folder in the way, Ctrl-C) the temp file is removed, an existing `path`
    is left as it was, and the error names `path` only (OSError with filename = path)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder", str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass
