"""Mephisto's import path for the static HTML blueprint (thin re-exports); the real home
is `mephisto.abstractions.blueprints.static_task`."""
