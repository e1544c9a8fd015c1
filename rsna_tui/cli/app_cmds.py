"""``rsna-tui serve``: the same app in a browser, through textual-serve, on localhost only."""
from __future__ import annotations

import shlex
import sys

import typer

from rsna_tui.cli.common import app, state_of

DEFAULT_PORT = 8000


@app.command()
def serve(
    ctx: typer.Context,
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port on localhost"),
) -> None:
    """Serve the app to a browser on localhost (reach it over SSH with `ssh -L PORT:localhost:PORT`).

    textual-serve has no authentication and starts one app process per browser tab, so it listens
    on localhost only.
    """
    from textual_serve.server import Server

    state = state_of(ctx)
    command = [sys.executable, "-m", "rsna_tui"]
    command += ["--db", str(state.db)] if state.db else ["--workspace", str(state.workspace.root)]
    typer.echo(
        f"serving rsna-tui on http://localhost:{port} (localhost only, no authentication);\n"
        f"from your own machine: ssh -L {port}:localhost:{port} <this host>, then open http://localhost:{port}"
    )
    Server(shlex.join(command), host="localhost", port=port, title="rsna-tui").serve()
