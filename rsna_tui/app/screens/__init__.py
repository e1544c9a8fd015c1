"""One module per screen; the table of screens and their keys is ``rsna_tui.app.app.SCREENS``."""
