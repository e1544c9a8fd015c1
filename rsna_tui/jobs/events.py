"""The job folder's files: ``spec.json`` and the append-only ``events.jsonl``.

A job process writes only to its folder (never to ``jobs.db``), so the same runner works on
another node of a cluster with a shared file system. Each event is one JSON object on one line,
written with a single ``write`` on an ``O_APPEND`` descriptor so that lines from the runner's
threads never interleave; readers consume complete lines only and remember a byte offset.

A write cut short by a full disk leaves a partial line; the next event then starts on a new line
(the partial one is skipped by readers as a bad line), so the ``finished`` event written after
the runner frees its disk reserve is always readable.

Event types: ``started`` (pid, host), ``progress`` (done, total, message), ``metric`` (name,
value, step), ``resource`` (see monitor), ``artefact`` (name, path), ``log`` (message) and
``finished`` (status ``succeeded`` / ``failed`` / ``cancelled``, exit_code, error). Every event has
``t`` (unix seconds) and ``type``.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

SPEC = "spec.json"
EVENTS = "events.jsonl"
LOG = "log.txt"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_spec(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / SPEC).read_text())


class EventWriter:
    """Appends events to one ``events.jsonl``; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides
        self._lock = threading.Lock()
        self._partial = False

    def emit(self, type_: str, **fields: Any) -> None:
        """Append one event; OSError (with the file name) when the disk refuses it."""
        event = {"t": time.time(), "type": type_, **fields}
        line = (json.dumps(event, default=str) + "\n").encode()
        with self._lock:
            if self._partial:
                line = b"\n" + line
            try:
                written = os.write(self._fd, line)  # one write per line: lines never interleave
                while written < len(line):  # cut short (disk full): finish it or fail below
                    self._partial = True
                    written += os.write(self._fd, line[written:])
            except OSError as exc:
                self._partial = True
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
            self._partial = False

    def emit_quietly(self, type_: str, **fields: Any) -> bool:
        """:meth:`emit`, False instead of an error (resource samples: losing one is harmless)."""
        try:
            self.emit(type_, **fields)
        except OSError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


class EventReporter:
    """The :class:`engine.reporter.Reporter` of a job: events, plus log lines on stdout (log.txt)."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self.writer.emit("progress", done=done, total=total, message=message)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.writer.emit("metric", name=name, value=float(value), step=step)

    def artefact(self, name: str, path: Path | str) -> None:
        self.writer.emit("artefact", name=name, path=str(Path(path).resolve()))

    def log(self, message: str) -> None:
        print(message, flush=True)
        self.writer.emit("log", message=message)


def read_complete(path: Path, offset: int, max_bytes: int | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """Events after byte ``offset``: ``(events, new_offset, bad_lines)``.

    Only complete lines are consumed: a line still being written stays for the next call.
    Lines that are not JSON objects with a ``type`` are skipped and counted, never fatal.
    ``max_bytes`` bounds one read (a longer first line is still read whole).
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(max_bytes if max_bytes else -1)
            if max_bytes and len(data) == max_bytes and b"\n" not in data:
                data += handle.read()
    except FileNotFoundError:
        return [], offset, 0
    end = data.rfind(b"\n") + 1
    events, bad = [], 0
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            events.append(event)
        else:
            bad += 1
    return events, offset + end, bad


def tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
