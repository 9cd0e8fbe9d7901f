"""Structured logs: one JSON object per line, never a key or a prompt.

Every metered request writes an access line (AIKEYS_ACCESS_LOG, on in the chart), so what a line
costs is paid by every request: with the standard library as it comes, ≈ 11 µs of CPU in a
tight loop and ≈ 25 µs a request under load (`python -m bench.variants`). Three parts of that
are not needed for the lines we write:

- the caller's file, line and function, the thread's and the process's names: looked up for
  every record (`sys._getframe` and a walk up the stack, among others), never printed here;
- the time stamp through `time.strftime` for every line: its date and time change once a second;
- a write (a system call) per line: the lines logged in one turn of the event loop go out in one
  write at its end, as the answers do (serving.py). Outside a running loop — start-up, shutdown,
  other threads — and from warnings up, lines go out at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import orjson

LEVELS = {level: logging.getLevelName(level).lower() for level in (10, 20, 30, 40, 50)}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: ts (UTC, ms), level, logger, message, and the record's
    `access` dict (the access line's fields) merged in."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # once a second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": LEVELS.get(record.levelno) or record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TurnHandler(logging.Handler):
    """Writes the lines of one event-loop turn with one write, at the end of the turn."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self.pending: list[str] = []
        self.scheduled: asyncio.AbstractEventLoop | None = None  # the loop a flush is queued on

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self.pending.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread
            self.flush()
            return
        if self.scheduled is not loop:  # also when a loop ended before its queued flush ran
            self.scheduled = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self.scheduled = None
            if not self.pending:
                return
            text = "".join(self.pending)
            self.pending.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # a closed or broken stdout: as logging.StreamHandler, report and go on
                self.handleError(logging.makeLogRecord({"msg": text}))
        finally:
            self.release()


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stdout for the `aikeys` loggers, written once per event-loop turn."""
    handler = TurnHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("aikeys")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def skip_record_lookups() -> None:
    """Stop looking up, for every record, what no line here shows: the caller's file, line and
    function, the thread's and the process's names (the logging HOWTO's "Optimization"; ≈ 2 µs a
    line). For the whole process, so only the server's own (main.create_app), not a test's."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
