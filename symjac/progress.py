"""Progress reports on stderr: what a build is doing, while it does it.

Used by ``api.py`` (every build of every derivative kind, the torch
backward's included), ``codegen.py`` and the command line, and — through
:func:`current`, the reporter of the stage now running in this thread — by
``build/toolchain.py``, which reports compile progress across a kernel's
chunk files (k of n) and the cost estimate of a long compile.

When it speaks (``verbose``, an :class:`~symjac.Options` field):

- ``None`` (the default): only builds that take a while. Lines are held back
  until the build has run for :data:`AUTO_DELAY` seconds (or a compile is
  estimated to take longer than that); then what was held back is printed
  and the rest follows as it happens. A build that finishes sooner prints
  nothing. ``SYMJAC_QUIET=1`` in the environment silences this default.
- ``True``: every stage of every build. ``False``: nothing.

Each stage prints a line as it starts and one as it ends, with its time and
what it produced. On a terminal (stderr is a tty) the start line and the
compile progress are one updating line that the end line replaces; in logs
and notebooks they are plain lines (compile progress about every tenth of the
files). A stage running for longer than ``heartbeat`` seconds says so at that
interval, so a long CSE or compile never looks like a hang.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time

__all__ = ["AUTO_DELAY", "QUIET_ENV", "Reporter", "current", "describe"]

AUTO_DELAY = 2.0  # seconds a build runs before the default (verbose=None) reports it
QUIET_ENV = "SYMJAC_QUIET"
_current: contextvars.ContextVar = contextvars.ContextVar("symjac_reporter", default=None)
# The start line of each stage the pipeline reports (its end line says the name).
_STARTING = {"traced": "tracing", "differentiated": "differentiating", "simplified": "simplifying (CSE)",
             "rendered": "rendering", "looked up": "looking up the rendered source", "compiled": "compiling",
             "loaded": "loading"}


def current() -> "Reporter":
    """The reporter of the stage running in this thread (a silent one outside any stage)."""
    return _current.get() or _SILENT


def describe(function) -> str:
    """A short name for what is built from ``function``: its name, or a traced function's."""
    name = getattr(function, "function_name", None) or getattr(function, "_function_name", None) \
        or getattr(function, "__name__", None)
    return name if isinstance(name, str) else type(function).__name__


def _quiet_environment() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Reporter:
    """Prints stage reports to ``stream`` (default: stderr at the time of printing).

    ``enabled``: print at all. ``delay``: hold lines back until that many
    seconds have passed since the reporter was made (see the module
    docstring); 0 prints at once. ``title``: a first line saying what is
    built. ``tty``: force (True/False) or detect (None) the updating line.
    """

    def __init__(self, enabled: bool = True, stream=None, heartbeat: float = 10.0, delay: float = 0.0,
                 title: str | None = None, tty: bool | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self.heartbeat = heartbeat
        self.delay = delay
        self.tty = tty
        self.operations = None  # the program's operation count, when the simplify stage ran
        self.traced = None  # the traced function, for the hints of a long compile's estimate
        self._started = time.perf_counter()
        self._open = False  # opens (prints what was held back) on the first line after `delay` seconds
        self._pending: list[str] = [title] if title else []
        self._partial = ""  # the updating line now shown (terminal), or the last progress held back
        self._lock = threading.RLock()

    @classmethod
    def for_build(cls, verbose, what: str = "", function=None) -> "Reporter":
        """The reporter of one build: ``verbose`` None (report a build that takes
        a while, unless ``SYMJAC_QUIET`` is set), True (always) or False (never)."""
        if what and what.split("-")[0].split()[0] not in ("Jacobian", "Hessian"):  # names keep their capital
            what = what[0].lower() + what[1:]
        title = f"symjac: building the {what} of {describe(function)}" if what else None
        if verbose is None:
            return cls(enabled=not _quiet_environment(), delay=AUTO_DELAY, title=title)
        return cls(enabled=bool(verbose), title=title)

    # -- output -------------------------------------------------------------
    def _is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        stream = self.stream or sys.stderr
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()

    def _emit_line(self, text: str) -> None:
        """A finished line; on a terminal it replaces the updating line."""
        if self._partial and self._is_tty():
            self._write("\r" + text + "\x1b[K\n")
        else:
            self._write(text + "\n")
        self._partial = ""

    def _emit_partial(self, text: str, plain: bool) -> None:
        """The updating line: rewritten in place on a terminal; printed when ``plain`` otherwise."""
        if self._is_tty():
            self._write("\r" + text + "\x1b[K")
            self._partial = text
        elif plain:
            self._write(text + "\n")

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        self._open_if_late()
        with self._lock:
            if self._open:
                self._emit_line(text)
            else:
                if self._partial:  # a stage's start line or its last progress, now history
                    self._pending.append(self._partial)
                self._pending.append(text)
                self._partial = ""

    def _progress_line(self, text: str, plain: bool) -> None:
        if not self.enabled:
            return
        self._open_if_late()
        with self._lock:
            if self._open:
                self._emit_partial(text, plain)
            else:
                self._partial = text  # shown if the build turns out to be long

    def open(self) -> None:
        """Start printing now: what was held back, then everything as it comes."""
        if not self.enabled:
            return
        with self._lock:
            if self._open:
                return
            self._open = True
            held, self._pending, partial, self._partial = self._pending, [], self._partial, ""
            for text in held:
                self._emit_line(text)
            if partial:
                self._emit_partial(partial, True)

    def _open_if_late(self) -> None:
        if not self._open and time.perf_counter() - self._started >= self.delay:
            self.open()

    # -- what the stages say --------------------------------------------------
    def note(self, text: str) -> None:
        self._line(text)

    def progress(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total`` steps of the running stage (e.g. C files compiled)."""
        step = max(1, total // 10)
        self._progress_line(f"  {what} {done} of {total}", plain=done == total or done % step == 0)

    def estimate(self, text: str, seconds: float) -> None:
        """A cost estimate before a step: one of :data:`AUTO_DELAY` seconds or more opens the report."""
        self._line(text)
        if seconds >= AUTO_DELAY:
            self.open()

    @contextlib.contextmanager
    def stage(self, name: str, starting: str | None = None):
        """Time a stage; the body fills ``details`` (a list of strings) to report.

        ``name`` is what the end line says ("compiled"), ``starting`` the start
        line ("compiling", by default ``name``). While the stage runs it is
        :func:`current` in this thread."""
        details: list[str] = []
        done = threading.Event()
        start = time.perf_counter()
        label = starting or _STARTING.get(name, name)
        if self.enabled:
            self._progress_line(f"  {label} ...", plain=True)

        def beat():
            wait = max(0.0, self._started + self.delay - time.perf_counter()) if not self._open else self.heartbeat
            while not done.wait(wait or self.heartbeat):
                if not self._open:
                    self.open()
                    wait = self.heartbeat
                    continue
                wait = self.heartbeat
                with self._lock:
                    shown = self._partial or f"  {label} ..."
                    base = shown.split(" (still running")[0]
                    self._emit_partial(f"{base} (still running, {time.perf_counter() - start:.0f} s)", plain=True)

        ticker = threading.Thread(target=beat, daemon=True) if self.enabled else None
        if ticker:
            ticker.start()
        token = _current.set(self)
        try:
            yield details
        finally:
            _current.reset(token)
            done.set()
            if ticker:
                ticker.join()
        self._line(f"  {name:<15} {time.perf_counter() - start:7.2f} s  {', '.join(details)}".rstrip())


_SILENT = Reporter(enabled=False)
