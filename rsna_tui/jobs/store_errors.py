"""The errors of ``jobs.db``: what SQLite says about the file, as one line naming it and what to do.

Every SQLite error that leaves :class:`rsna_tui.jobs.store.Store` (opening, a query, a write
transaction) is a :class:`StoreError`; the CLI prints its message and exits 1. ``kind`` tells
``rsna-tui doctor`` whether a rebuild can help (only ``damaged``).
"""
from __future__ import annotations

import functools
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from rsna_tui.jobs.store import Store

BUSY_TIMEOUT_S = 60.0
#: Overrides :data:`BUSY_TIMEOUT_S` (seconds), e.g. for scripts that would rather fail fast.
BUSY_TIMEOUT_VAR = "RSNA_TUI_BUSY_TIMEOUT"


class StoreError(RuntimeError):
    """``jobs.db`` cannot be used as it is; the message names the file and what to do.

    ``kind`` is one of ``damaged``, ``locked``, ``readonly``, ``full``, ``schema`` or ``error``
    (what ``rsna-tui doctor`` needs to decide on a repair).
    """

    def __init__(self, message: str, path: Path | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


class SchemaError(StoreError):
    """A database this version cannot use (written by a newer rsna-tui, or not ours)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message, path, "schema")


def busy_timeout() -> float:
    """Seconds a writer waits for another one (``RSNA_TUI_BUSY_TIMEOUT``, else 60)."""
    try:
        return float(os.environ.get(BUSY_TIMEOUT_VAR) or BUSY_TIMEOUT_S)
    except ValueError:
        return BUSY_TIMEOUT_S


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The one-line message for what SQLite said about ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT") or "malformed" in text or "not a database" in text:
        return StoreError(
            f"{path} is damaged ({text}); it was left untouched. Run `rsna-tui doctor --repair` to set it "
            "aside and rebuild the job list from the job folders, or use another workspace.", path, "damaged",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreError(
            f"{path} is locked by another process ({text}, waited {busy_timeout():.0f} s): wait for it or stop it "
            f"(`fuser -v {path}` names it), then try again; on a network file system the lock may be stale "
            "(`rsna-tui doctor`).", path, "locked",
        )
    if (name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in text) and on_read_only_fs(path):
        return StoreError(
            f"{path} is on a read-only file system ({text}): read it with `rsna-tui --db {path} jobs`, or copy "
            "the workspace somewhere writable to run jobs.", path, "readonly",
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return StoreError(
            f"{path} cannot be written ({text}): make it and its folder writable for you, or read it with "
            f"`rsna-tui --db {path} jobs`.", path, "readonly",
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreError(
            f"{path}: the disk is full ({text}); nothing was changed. Free some space and try again.", path, "full",
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StoreError(
            f"{path} cannot be opened ({text}): check that its folder exists and that you may read and write it.",
            path, "readonly",
        )
    return StoreError(f"{path}: {text} (`rsna-tui doctor` checks the workspace)", path)


def on_read_only_fs(path: Path) -> bool:
    """Whether ``path`` (or its folder) lies on a file system mounted read-only."""
    for candidate in (path, path.parent):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn an :class:`sqlite3.Error` raised inside into the :class:`StoreError` of ``path``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """A Store method whose SQLite errors become StoreErrors naming the file."""

    @functools.wraps(method)
    def wrapper(self: "Store", *args: Any, **kwargs: Any) -> Any:
        with translated(self.path):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
