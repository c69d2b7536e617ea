"""The data model: entities stored in the MephistoDB, their statuses and transitions.

May import only `mephisto.errors` and `mephisto.utils.dirs`/`config_handler`.
"""
