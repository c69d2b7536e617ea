"""The database: schema, migrations and `MephistoDB` (SQLite or PostgreSQL).

May import `mephisto.errors`, `mephisto.utils.dirs` and `mephisto.data_model`.
"""

from mephisto.db.database import LocalMephistoDB, MephistoDB

__all__ = ["LocalMephistoDB", "MephistoDB"]
