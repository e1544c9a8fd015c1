"""The parameter form of one stage: a field per parameter with its type, help and profile default.

Generated from the stage table like the CLI's ``--set``. Each field is checked as it is typed with
the parameter's own parser (the same text as ``--set``), and the form hands back only the values
that differ from the profile, as ``key=value`` strings, exactly what ``rsna-tui run --set`` takes.
"""
from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static

from engine.stages import Param, ParameterError, Stage


def as_text(value: Any) -> str:
    """A value as one would type it after ``--set key=`` (lists comma separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(as_text(v) for v in value)
    if isinstance(value, float):
        return json.dumps(value)
    return str(value)


class ParamForm(VerticalScroll):
    """Fields of ``stage`` filled with ``profile``'s defaults."""

    def __init__(self, stage: Stage, defaults: dict[str, Any], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stage = stage
        self.defaults = {name: as_text(value) for name, value in defaults.items()}

    def compose(self) -> ComposeResult:
        for param in self.stage.params:
            default = self.defaults.get(param.name, "")
            with Vertical(classes="param-row"):
                with Horizontal(classes="param-line"):
                    yield Label(f"{param.name} ({param.kind})", classes="param-label")
                    yield Input(default, id=f"param-{param.name}", classes="param-input", name=param.name, compact=True)
                choices = f"; one of {', '.join(map(as_text, param.choices))}" if param.choices else ""
                yield Static(f"{param.help}{choices}; profile: {default!r}", classes="param-help", markup=False)
                yield Static("", id=f"error-{param.name}", classes="param-error hidden", markup=False)

    def text_of(self, name: str) -> str:
        return self.query_one(f"#param-{name}", Input).value.strip()

    def overrides(self) -> list[str]:
        """``key=value`` for every field that differs from the profile (the ``--set`` arguments)."""
        out = []
        for param in self.stage.params:
            text = self.text_of(param.name)
            if text != self.defaults.get(param.name, ""):
                out.append(f"{param.name}={text}")
        return out

    def check_field(self, param: Param) -> str | None:
        """Parse one field as ``--set`` would; show and return the error text, if any."""
        try:
            param.parse(self.text_of(param.name))
            error = None
        except ParameterError as exc:
            error = str(exc)
        self.show_error(param.name, error)
        return error

    def show_error(self, name: str, error: str | None) -> None:
        box = self.query_one(f"#error-{name}", Static)
        box.update(error or "")
        box.set_class(not error, "hidden")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.name:
            self.check_field(self.stage.param(event.input.name))
