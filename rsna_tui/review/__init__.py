"""Review of a ``predict`` job without any terminal UI: the cases, the case table and the slice pictures.

``cases`` loads a job's cases (store + files), ``table`` sorts and filters them, ``volume`` opens one
case's review files on the converted volume's grid, ``windows`` holds the window / level presets,
``render`` draws one plane with its overlays as RGB, ``png`` writes it with letters and legend. The
CLI (``rsna_tui.cli.review``) and the Textual screen (``rsna_tui.app.screens.review``) share them.
"""
