"""The Textual app: ``rsna-tui`` opens a live, keyboard-first control room for the jobs of a workspace.

Nothing here is imported by the CLI until the app opens (``rsna_tui.cli.common.root``), and nothing
here imports torch or nnU-Net.
"""
