"""A task router: the task server on its own host, linked to an operator that dials in
(`mephisto router`, the `remote` architect). May import `mephisto.server` and
`mephisto.errors`; never the database or the operations layer."""
