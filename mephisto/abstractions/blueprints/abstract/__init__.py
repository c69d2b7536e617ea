"""Mephisto's import paths for abstract blueprints (thin re-exports)."""
