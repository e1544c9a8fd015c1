"""``rsna-tui export-kaggle``: the trained models, the engine and a notebook script in one folder to upload
as a Kaggle dataset (``rsna_tui.kaggle_export`` does the work)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rsna_tui.cli.common import app, print_json, state_of
from rsna_tui.kaggle_export import NOTEBOOK, export


@app.command("export-kaggle")
def export_kaggle(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="New (or empty) folder to write the export into"),
    models: str = typer.Option("", "--models", help="Stage-2 models: job ids or results folders, comma separated "
                                                     "(default: the latest finetune1 and finetune2)"),
    stage1_model: str = typer.Option("", "--stage1-model", help="Stage-1 model: a train2d job id or results folder "
                                                                "(default: the latest train2d)"),
    tta: Optional[int] = typer.Option(None, "--tta", help="Flip views per model in the notebook (1, 4 or 8; default: "
                                                          "the full profile's)"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
) -> None:
    """Write a folder to upload as a Kaggle dataset: models, engine code, pinned requirements, notebook.py."""
    store = state_of(ctx).manager().store
    manifest = export(store, out, stage1=stage1_model, models=models, tta=tta)
    if as_json:
        print_json(manifest)
        return
    typer.echo(f"exported to {manifest['folder']}")
    for source in manifest["sources"]:
        typer.echo(f"  {source['role']}: {source['path']} (from {source['origin']})")
    typer.echo(f"  {NOTEBOOK}: run it in a Kaggle notebook with this folder attached as a dataset")
