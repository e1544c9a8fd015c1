"""rsna-tui: terminal app and job manager for the two-stage aneurysm detector."""
