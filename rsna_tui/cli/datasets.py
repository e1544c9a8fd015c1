"""``rsna-tui datasets``: list, add, show and remove the registered datasets of the workspace."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rsna_tui.cli.common import app, print_json, print_table, state_of
from rsna_tui.datasets import add_dataset, dataset_summary, list_datasets, remove_dataset

datasets_app = typer.Typer(help="Registered datasets: Kaggle-layout folders known by name.", no_args_is_help=False)
app.add_typer(datasets_app, name="datasets")


def _conversion_cell(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return "not converted"
    kinds = ", ".join(f"{k} {n}" for k, n in outcome["fallback_kinds"].items())
    return (f"{outcome['converted']} converted, {outcome['fallback']} fallback" + (f" ({kinds})" if kinds else "")
            + f", {outcome['failed']} failed")


def _summaries(ctx: typer.Context) -> list[dict[str, Any]]:
    state = state_of(ctx)
    store = state.manager().store if state.workspace.db_path.exists() or state.readonly else None
    out = []
    for entry in list_datasets(state.workspace):
        if not entry["exists"]:
            out.append({**entry, "error": f"link target {entry['path']} does not exist"})
            continue
        try:
            out.append({**entry, **dataset_summary(state.workspace, entry["name"], store)})
        except ValueError as exc:  # the reader's message: the folder changed since it was added
            out.append({**entry, "error": str(exc)})
    return out


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON")) -> None:
    """List the datasets: series by modality, positives, localizers, segmentations, conversion per split."""
    if ctx.invoked_subcommand is not None:
        return
    infos = _summaries(ctx)
    if as_json:
        print_json(infos)
        return
    rows = []
    for info in infos:
        if "error" in info:
            rows.append([info["name"], "", "", "", "", "", info["error"]])
            continue
        for split, s in info["splits"].items():
            modalities = " ".join(f"{m}:{n}" for m, n in sorted(s["modalities"].items()))
            rows.append([info["name"], split, str(s["series"]), modalities,
                         str(s["positives"].get("Aneurysm Present", "")), f"{s['localizers']}/{s['segmentations']}",
                         _conversion_cell(s["conversion"])])
    print_table(f"datasets in {state_of(ctx).workspace.layout.datasets}",
                ["name", "split", "series", "modalities", "positives", "loc/seg", "conversion"], rows)


@datasets_app.command("add")
def add(ctx: typer.Context, name: str = typer.Argument(..., help="Name to use in --set dataset=NAME"),
        path: Path = typer.Argument(..., help="Kaggle-layout folder (series/, train.csv, ...)")) -> None:
    """Register a Kaggle-layout folder (checked by the reader; the data is linked, not copied)."""
    added = add_dataset(state_of(ctx).workspace, name, path)
    typer.echo(f"{added['name']}\t{added['path']}\t{','.join(added['splits'])}")


@datasets_app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(...),
         as_json: bool = typer.Option(False, "--json", help="Print as JSON")) -> None:
    """One dataset in detail: per split, modalities, positives per location, conversion outcome."""
    state = state_of(ctx)
    store = state.manager().store if state.workspace.db_path.exists() or state.readonly else None
    info = dataset_summary(state.workspace, name, store)
    if as_json:
        print_json(info)
        return
    typer.echo(f"{info['name']}: {info['path']}")
    for split, s in info["splits"].items():
        typer.echo(f"  {split}: {s['series']} series ({s['table'] or 'no table'})")
        typer.echo("    modalities    " + (", ".join(f"{m} {n}" for m, n in sorted(s["modalities"].items())) or "-"))
        positives = ", ".join(f"{c} {n}" for c, n in s["positives"].items() if n)
        typer.echo(f"    positives     {positives or '-'}")
        typer.echo(f"    localizers    {s['localizers']} points on {s['localized_series']} series")
        typer.echo(f"    segmentations {s['segmentations']}")
        typer.echo(f"    conversion    {_conversion_cell(s['conversion'])}"
                   + (f" (job {s['convert_job']})" if s.get("convert_job") else ""))


@datasets_app.command("remove")
def remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Forget a registered dataset; its data stays where it is."""
    target = remove_dataset(state_of(ctx).workspace, name)
    typer.echo(f"removed {name} (the data stays in {target})")
