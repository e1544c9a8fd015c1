"""``rsna-tui stages``: the stage table, its parameters and every profile's defaults."""
from __future__ import annotations

import json
from typing import Any

import typer

from engine.stages import PROFILES, ParameterError
from rsna_tui.cli.common import app, print_json
from rsna_tui.jobs.stage_table import all_stages


def _stage_info(name: str) -> dict[str, Any]:
    stage = all_stages()[name]
    defaults: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for profile in PROFILES:
        try:
            defaults[profile] = stage.defaults(profile)
        except ParameterError as exc:
            errors[profile] = str(exc)
    return {
        "name": stage.name, "help": stage.help, "gpu": stage.gpu, "resumable": stage.resumable,
        "params": [
            {"name": p.name, "kind": p.kind, "help": p.help, "choices": list(p.choices),
             "defaults": {profile: values.get(p.name) for profile, values in defaults.items()}}
            for p in stage.params
        ],
        **({"profile_errors": errors} if errors else {}),
    }


@app.command()
def stages(as_json: bool = typer.Option(False, "--json", help="Print as JSON")) -> None:
    """The stages, their parameters and the defaults of each profile."""
    infos = [_stage_info(name) for name in all_stages()]
    if as_json:
        print_json(infos)
        return
    for info in infos:
        flags = ", ".join(f for f, on in (("GPU", info["gpu"]), ("resumable", info["resumable"])) if on)
        typer.echo(f"{info['name']}: {info['help']}" + (f" [{flags}]" if flags else ""))
        for p in info["params"]:
            values = "  ".join(f"{profile}={json.dumps(v)}" for profile, v in p["defaults"].items())
            choices = f" (one of {', '.join(map(str, p['choices']))})" if p["choices"] else ""
            typer.echo(f"    {p['name']} ({p['kind']}): {p['help']}{choices}\n        {values}")
