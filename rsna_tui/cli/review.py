"""``rsna-tui review``: a predict job's cases against the truth, and one case's plane as a PNG.

Without ``--case``: the case table (sorted by the error of Aneurysm Present, largest first; filters
for false positives / negatives, fallbacks, failed series, a modality). With ``--case``: that case's
14 probabilities against the truth and, with ``--png``, the picture the review screen shows (every
overlay, the legend, the orientation letters and the convention). The slice defaults to the first
truth localizer point, else the strongest decoder-1 aneurysm response, else the middle.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from engine.labels import LABEL_COLUMNS
from rsna_tui.cli.common import app, is_terminal, print_json, print_table, state_of
from rsna_tui.review.cases import ReviewError, ReviewJob, load_review
from rsna_tui.review.table import FILTERS, HEADERS, SORTS, View, row_cells, select

#: ``rsna_tui.review.volume.PLANES``, not imported: that module loads nibabel, which a table does not need.
PLANE_NAMES = ("axial", "coronal", "sagittal")


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(1)


def _heading(review: ReviewJob) -> list[str]:
    lines = [f"predict job {review.job.id} ({review.job.status}), {len(review.cases)} series, {review.folder}"]
    if review.score is not None:
        lines.append(f"score {review.score:.4f}")
    if review.aucs:
        lines.append("AUC  " + "  ".join(f"{name[:24]} {auc:.3f}" for name, auc in review.aucs.items()))
    elif not review.has_truth:
        lines.append("no truth for these series: errors and AUCs are blank")
    return lines


@app.command()
def review(
    ctx: typer.Context,
    job: Optional[str] = typer.Argument(None, metavar="[JOB]", help="A predict job id (default: the latest)"),
    case: Optional[str] = typer.Option(None, "--case", "-c", help="One case: its SeriesInstanceUID or an end of it"),
    plane: str = typer.Option("axial", "--plane", help="axial, coronal or sagittal (with --png)"),
    slice_: Optional[int] = typer.Option(None, "--slice", help="0-based slice of --plane (default: a truth point, "
                                                               "else the strongest aneurysm response)"),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the case's picture to this PNG file"),
    window: Optional[str] = typer.Option(None, "--window", help="Window preset (CTA: angio, brain, bone; MR: "
                                                                "p1-p99, p0.5-p99.5, p5-p95)"),
    hide: list[str] = typer.Option([], "--hide", help="Leave an overlay out: box, aneurysm, vessels, points"),
    convention: str = typer.Option("radiological", "--convention", help="radiological (R on the left) or neurological"),
    filter_: str = typer.Option("all", "--filter", help=f"Cases to list: {', '.join(FILTERS)}"),
    modality: str = typer.Option("", "--modality", help="Only this modality (CTA, MRA, MRI T2, MRI T1post)"),
    sort: str = typer.Option("error", "--sort", help=f"Order: {', '.join(SORTS)}"),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON"),
    tui: bool = typer.Option(False, "--tui", help="Open the review screen in the terminal instead"),
    graphics: str = typer.Option("", "--graphics", help="With --tui: 'auto' asks the terminal for Kitty / Sixel "
                                                        "graphics (default: $RSNA_TUI_GRAPHICS, else off = half blocks)"),
) -> None:
    """A predict job's cases against the truth; one case's slice picture as a PNG."""
    if tui:
        _run_tui(ctx, job, graphics)
        return
    try:
        view = View(filter_, modality, sort)
        review_job = load_review(state_of(ctx).refreshed().store, job)
        if case is None:
            if png is not None:
                raise _fail("--png needs --case (which series to draw)")
            _print_table(review_job, view, as_json)
            return
        _print_case(review_job, case, plane, slice_, png, window, hide, convention, as_json)
    except (ReviewError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _run_tui(ctx: typer.Context, job: Optional[str], graphics: str) -> None:
    from rsna_tui.app.widgets.slice_view import detect_graphics

    state = state_of(ctx)
    state.refreshed()  # fold finished jobs first, so that their predictions are in the store
    detect_graphics(graphics or None)  # before the app owns the terminal
    from rsna_tui.app.review_app import ReviewApp

    ReviewApp(state.db or state.workspace.db_path, job).run()


def _print_table(review_job: ReviewJob, view: View, as_json: bool) -> None:
    cases = select(review_job.cases, view)
    if as_json:
        data = review_job.to_json()
        data.update(filter=view.filter, modality=view.modality, sort=view.sort, cases=[c.to_json() for c in cases])
        print_json(data)
        return
    for line in _heading(review_job):  # on stderr when piped, so that stdout stays plain TSV
        typer.echo(line, err=not is_terminal())
    print_table(f"{len(cases)} of {len(review_job.cases)} cases ({view.filter}, by {view.sort})", HEADERS,
                [row_cells(c) for c in cases])


def _print_case(review_job: ReviewJob, ref: str, plane: str, index: Optional[int], png: Optional[Path],
                window: Optional[str], hide: list[str], convention: str, as_json: bool) -> None:
    if plane not in PLANE_NAMES:
        raise ValueError(f"unknown plane {plane!r}; planes: {', '.join(PLANE_NAMES)}")
    case = review_job.case(ref)
    data = case.to_json()
    if png is not None:
        from rsna_tui.review.png import write_png  # numpy / nibabel / Pillow only for pictures
        from rsna_tui.review.viewer import Viewer
        from rsna_tui.review.volume import CaseFilesError, load_case

        if case.folder is None:
            raise ReviewError(f"case {case.uid} of job {review_job.job.id} has no review folder")
        try:
            viewer = Viewer(load_case(case.folder), case.modality, plane, convention)
        except CaseFilesError as exc:
            raise ReviewError(str(exc)) from None
        unknown = sorted(set(hide) - viewer.overlays)
        if unknown:
            raise ValueError(f"--hide {unknown[0]}: overlays are box, aneurysm, vessels, points")
        viewer.overlays -= set(hide)
        if window:
            viewer.choose_window(window)
        if index is not None:
            count = viewer.case.slice_count(plane)
            if not 0 <= index < count:
                raise ValueError(f"--slice {index} is outside the {plane} slices 0..{count - 1} of {case.uid}")
            viewer.set_slice(index)
        assert viewer.window is not None
        data["picture"] = write_png(viewer.case, plane, viewer.index(), viewer.window, png, title=case.short,
                                    overlays=frozenset(viewer.overlays), convention=convention)
    if as_json:
        print_json(data)
        return
    typer.echo(f"{case.uid}  {case.modality}  status {case.status}"
               + (f"  {case.seconds:.1f} s" if case.seconds is not None else "")
               + (f"  error: {case.error}" if case.error else ""))
    rows = []
    for i, column in enumerate(LABEL_COLUMNS):
        truth = "" if case.truth is None else str(case.truth[i])
        rows.append([column, f"{case.probabilities[i]:.3f}", truth])
    print_table(f"job {review_job.job.id}", ["column", "probability", "truth"], rows)
    if "picture" in data:
        picture = data["picture"]
        typer.echo(f"wrote {picture['png']}: {picture['plane']} slice {picture['slice']} of {picture['slices']}, "
                   f"{picture['window']}, {picture['convention']} convention")
