"""Mephisto's import path for data-model constants (thin re-exports); the real home of
`NO_PROJECT_NAME` is `mephisto.data_model.project`."""

from mephisto.data_model.project import NO_PROJECT_NAME

__all__ = ["NO_PROJECT_NAME"]
