"""Mephisto's import paths for database classes (thin re-exports); the real home is
`mephisto.db`."""
