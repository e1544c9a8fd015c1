"""Datasets: the demo cohort and every registered Kaggle-layout folder, their counts and conversions.

Everything comes from ``rsna_tui.datasets`` (``list_datasets``, ``dataset_summary``,
``add_dataset``, ``remove_dataset``), the module behind the CLI's dataset commands; registering a
folder shows the Kaggle reader's error as it is. Summaries are read in a thread worker (a big
folder takes a while to count).
"""
from __future__ import annotations

import importlib
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from rsna_tui.app.poll import open_store
from rsna_tui.app.widgets.confirm import Confirm

DATASETS_MODULE = "rsna_tui.datasets"


def datasets_api() -> Any:
    """The datasets module, or None when this build lacks it (the screen says so)."""
    try:
        return importlib.import_module(DATASETS_MODULE)
    except ImportError:
        return None


def name_of(item: Any) -> str:
    """A dataset entry as the module lists it (a name, a dict or an object with ``name``)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("name", item))
    return str(getattr(item, "name", item))


def render_summary(value: Any, indent: int = 0) -> list[str]:
    """A summary dict as indented ``key: value`` lines (nested dicts and lists one level deeper)."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(render_summary(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {item}")
        return lines
    if isinstance(value, list):
        return [line for item in value for line in render_summary(item, indent)] if any(
            isinstance(i, (dict, list)) for i in value) else [pad + ", ".join(map(str, value))]
    return [f"{pad}{value}"]


class DatasetsScreen(Screen):
    AUTO_FOCUS = "#datasets-table"
    BINDINGS = [
        Binding("a", "register", "Register folder"),
        Binding("d", "remove", "Remove"),
        Binding("ctrl+r", "reload", "Reload"),
        Binding("escape", "leave_field", "Keys", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="datasets-note", classes="screen-status")
        yield Input(placeholder="register: NAME /path/to/kaggle-layout-folder (enter)", id="register", classes="hidden")
        with Horizontal():
            yield DataTable(id="datasets-table", cursor_type="row", classes="screen-table")
            with VerticalScroll(classes="side-panel"):
                yield Static("", id="dataset-summary", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#datasets-table", DataTable).add_columns("dataset")
        self.action_reload()

    def action_reload(self) -> None:
        api = datasets_api()
        note = self.query_one("#datasets-note", Static)
        if api is None:
            note.update(f"{DATASETS_MODULE} is not in this build: datasets cannot be listed here yet")
            return
        try:
            names = [name_of(item) for item in api.list_datasets(self.app.workspace)]
        except Exception as exc:
            note.update(f"could not list datasets of {self.app.workspace.root}: {exc}")
            return
        table = self.query_one("#datasets-table", DataTable)
        table.clear()
        for name in names:
            table.add_row(name, key=name)
        note.update(f"{len(names)} dataset(s) in {self.app.workspace.layout.datasets}   a register, d remove")
        if names:
            self.summarise(names[0])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self.summarise(str(event.row_key.value))

    @work(thread=True, exclusive=True, exit_on_error=False, group="dataset-summary")
    def summarise(self, name: str) -> None:
        app = self.app
        api = datasets_api()
        try:
            store = open_store(app.workspace, app.db_path, app.readonly) if app.db_path.exists() else None
            try:
                summary = api.dataset_summary(app.workspace, name, store=store)
            finally:
                if store is not None:
                    store.close()
            text = "\n".join([f"{name}", *render_summary(summary)])
        except Exception as exc:
            text = f"{name}: {exc}"
        app.call_from_thread(self.query_one("#dataset-summary", Static).update, text)

    def action_register(self) -> None:
        if not self.app.writable():
            return
        box = self.query_one("#register", Input)
        box.remove_class("hidden")
        box.focus()

    def action_leave_field(self) -> None:
        self.query_one("#register", Input).add_class("hidden")
        self.set_focus(self.query_one("#datasets-table", DataTable))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "register":
            return
        name, _, path = event.value.strip().partition(" ")
        if not name or not path.strip():
            self.app.notify("type a name, a space and the folder's path", severity="warning")
            return
        try:
            datasets_api().add_dataset(self.app.workspace, name, path.strip())
        except Exception as exc:  # the Kaggle reader's message, as it is
            self.app.notify(str(exc), title=f"{path.strip()} not registered", severity="error", timeout=10)
            return
        event.input.value = ""
        event.input.add_class("hidden")
        self.app.notify(f"registered {name}: {path.strip()}")
        self.action_reload()

    def action_remove(self) -> None:
        if not self.app.writable():
            return
        table = self.query_one("#datasets-table", DataTable)
        if not table.row_count:
            return
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

        def answered(yes: bool | None) -> None:
            if yes:
                try:
                    datasets_api().remove_dataset(self.app.workspace, name)
                except Exception as exc:
                    self.app.notify(str(exc), severity="error")
                self.action_reload()

        self.app.push_screen(Confirm(f"Remove dataset {name}?", [
            f"removes the registration of {name} from {self.app.workspace.layout.datasets}"
        ], yes="Remove"), answered)
