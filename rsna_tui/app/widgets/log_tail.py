"""The log tail: follows ``log.txt`` (by polling, so it works on NFS), with search and a filter mode.

Search (``/``, then ``n`` / ``N``) moves to matching lines and keeps every line; filter mode
(``F``) shows only the lines that match. The whole log opens in ``$PAGER`` with ``o`` (the screen
does that: it needs ``App.suspend``).
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

MAX_LINES = 20000


class LogTail(Vertical):
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("n", "next(1)", "Next match", show=False),
        Binding("N", "next(-1)", "Previous match", show=False),
        Binding("F", "filter", "Filter mode"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lines: list[str] = []
        self._partial = ""
        self.needle = ""
        self.filtering = False
        self._match = -1

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search the log (enter: find, escape: back)", id="log-search", classes="hidden")
        yield Log(id="log-view", max_lines=MAX_LINES, auto_scroll=True)
        yield Static("", id="log-status")

    @property
    def view(self) -> Log:
        return self.query_one("#log-view", Log)

    def add_text(self, text: str) -> None:
        """Append log text (complete lines are shown; a trailing partial line waits)."""
        if not text:
            return
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        if not complete:
            return
        self.lines.extend(complete)
        if len(self.lines) > MAX_LINES:
            del self.lines[: len(self.lines) - MAX_LINES]
        shown = [l for l in complete if self._keep(l)]
        if shown:
            self.view.write_lines(shown)
        self._status()

    def _keep(self, line: str) -> bool:
        return not (self.filtering and self.needle) or self.needle.lower() in line.lower()

    def _rewrite(self) -> None:
        view = self.view
        view.clear()
        view.write_lines([l for l in self.lines if self._keep(l)])
        self._status()

    def _status(self) -> None:
        mode = f"filter {self.needle!r}" if self.filtering and self.needle else (f"search {self.needle!r}" if self.needle else "following")
        hits = sum(self.needle.lower() in l.lower() for l in self.lines) if self.needle else 0
        extra = f", {hits} matching" if self.needle else ""
        self.query_one("#log-status", Static).update(f"{len(self.lines)} lines, {mode}{extra}  (/ search, n/N, F filter, o pager)")

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.remove_class("hidden")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.needle = event.value.strip()
        self._match = -1
        if self.filtering:
            self._rewrite()
        else:
            self.action_next(1)
        self.view.focus()

    def action_filter(self) -> None:
        self.filtering = not self.filtering
        self._rewrite()

    def action_next(self, direction: int) -> None:
        """Move to the next (or previous) line containing the search text."""
        if not self.needle:
            return
        shown = [l for l in self.lines if self._keep(l)]
        hits = [i for i, l in enumerate(shown) if self.needle.lower() in l.lower()]
        if not hits:
            self.app.notify(f"{self.needle!r} is not in the log", severity="warning")
            return
        later = [i for i in hits if (i > self._match if direction > 0 else i < self._match)]
        self._match = (later[0] if direction > 0 else later[-1]) if later else (hits[0] if direction > 0 else hits[-1])
        view = self.view
        view.auto_scroll = False
        view.scroll_to(y=max(0, self._match - view.size.height // 2), animate=False)
        self._status()
        self.query_one("#log-status", Static).update(
            f"match {hits.index(self._match) + 1} of {len(hits)} at line {self._match + 1}: {shown[self._match][:60]}"
        )

    def follow(self) -> None:
        """Back to following the end (escape in the search box)."""
        self.view.auto_scroll = True
        self.view.scroll_end(animate=False)
