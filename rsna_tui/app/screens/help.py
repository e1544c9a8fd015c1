"""``?``: the key map of the screen it was opened from, and the keys that work everywhere."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def _our_keys(node: object) -> set[str]:
    """Keys declared by our own classes in ``node``'s hierarchy (not Textual's defaults)."""
    keys: set[str] = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("rsna_tui"):
            for binding in cls.__dict__.get("BINDINGS", []):
                for key in (binding.key if isinstance(binding, Binding) else binding[0]).split(","):
                    keys.add(key.strip())
    return keys


def key_table(screen: Screen) -> Table:
    """The keys of ``screen``, of our widgets in its focus chain and of the app, shown or not.

    Textual's own widget keys (cursor movement, text editing, focus) are left out: they are the
    usual ones.
    """
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("key")
    table.add_column("does")
    table.add_column("where", style="dim")
    ours: dict[int, set[str]] = {}
    seen: set[str] = set()
    for key, active in screen.active_bindings.items():
        node = active.node
        if id(node) not in ours:
            ours[id(node)] = _our_keys(node)
        if key in seen or key not in ours[id(node)]:
            continue
        seen.add(key)
        binding = active.binding
        where = "everywhere" if node is screen.app else type(node).__name__.removesuffix("Screen")
        table.add_row(Text(screen.app.get_key_display(binding)), binding.description or binding.action, where)
    table.add_row("ctrl+p", "command palette: every command by name, themes", "everywhere")
    return table


class HelpScreen(ModalScreen[None]):
    """Closes with escape, ``?`` or ``q``."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def __init__(self, of: Screen) -> None:
        super().__init__()
        self.of = of
        self.table = key_table(of)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(f"[b]Keys of {type(self.of).__name__.removesuffix('Screen')}[/b]  (Ctrl+P: every command by name)")
            yield Static(self.table)
