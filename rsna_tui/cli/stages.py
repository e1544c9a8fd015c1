"""``rsna-tui stages``: the stage table, its parameters, inputs and every profile's defaults."""
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
        "inputs": [
            {"stage": i.stage, "param": i.param, "artefact": i.artefact, "match": list(i.match),
             "fixed": dict(i.fixed), "when_dataset": i.when_dataset}
            for i in stage.inputs
        ],
        **({"profile_errors": errors} if errors else {}),
    }


def _input_text(item: dict[str, Any]) -> str:
    """``roi (dataset, split=train)`` or ``train3d.checkpoint -> init_from``."""
    keys = [*item["match"], *(f"{k}={v}" for k, v in item["fixed"].items())]
    if item["when_dataset"]:
        keys.append(f"when dataset={item['when_dataset']}")
    head = f"{item['stage']}.{item['artefact']} -> {item['param']}" if item["param"] else item["stage"]
    return head + (f" ({', '.join(keys)})" if keys else "")


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
        if info["inputs"]:
            typer.echo("    inputs: " + ", ".join(_input_text(i) for i in info["inputs"]))
        for p in info["params"]:
            values = "  ".join(f"{profile}={json.dumps(v)}" for profile, v in p["defaults"].items())
            choices = f" (one of {', '.join(map(str, p['choices']))})" if p["choices"] else ""
            typer.echo(f"    {p['name']} ({p['kind']}): {p['help']}{choices}\n        {values}")
