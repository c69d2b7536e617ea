"""Mephisto's import path for unit and assignment statuses; the real home is
`mephisto.data_model.status`."""

from mephisto.data_model.status import AssignmentState

__all__ = ["AssignmentState"]
