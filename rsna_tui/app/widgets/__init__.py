"""Widgets: each shows one thing and knows nothing of the store."""
