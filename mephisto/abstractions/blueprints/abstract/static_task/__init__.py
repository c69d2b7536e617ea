"""Mephisto's import path; the real home is `mephisto.abstractions.blueprints.static_task`."""
