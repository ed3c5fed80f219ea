"""Stage-by-stage progress reports on stderr (codegen command, ``verbose=True``).

Each stage prints one line when it ends: its name, its time and what it
produced. A stage still running after ``heartbeat`` seconds prints a
"still running" line at that interval, so a long CSE or compile never looks
like a hang.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

__all__ = ["Reporter"]


class Reporter:
    """Prints stage reports to ``stream`` when ``enabled``."""

    def __init__(self, enabled: bool = True, stream=None, heartbeat: float = 10.0) -> None:
        self.enabled = enabled
        self.stream = stream
        self.heartbeat = heartbeat

    def _print(self, text: str) -> None:
        if self.enabled:
            stream = self.stream or sys.stderr
            print(text, file=stream, flush=True)

    def note(self, text: str) -> None:
        self._print(text)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time a stage; the body fills ``details`` (a list of strings) to report."""
        details: list[str] = []
        done = threading.Event()
        start = time.perf_counter()

        def beat():
            while not done.wait(self.heartbeat):
                self._print(f"{name:<15} still running ({time.perf_counter() - start:.0f} s)")

        ticker = threading.Thread(target=beat, daemon=True) if self.enabled else None
        if ticker:
            ticker.start()
        try:
            yield details
        finally:
            done.set()
            if ticker:
                ticker.join()
        self._print(f"{name:<15} {time.perf_counter() - start:7.2f} s  {', '.join(details)}".rstrip())
