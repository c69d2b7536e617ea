"""The ASGI app browsers talk to, and its interface to the operator (`backend`).

May import `errors`, `utils`, `data_model`, `db` and the `abstractions` contracts; never
plugins or `operations` (they sit above it).
"""
