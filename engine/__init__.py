"""The two-stage intracranial aneurysm detector (RSNA 2025, 2nd place) and its data pipeline.

The engine knows the model and nothing about jobs: it never imports ``rsna_tui``, SQLModel or
Textual. Stage functions receive a :class:`engine.context.StageContext` whose reporter is the one
seam to whoever runs them.
"""
