"""The review web app (`mephisto review`): a reviewer chooses a task or run, pages
through submitted units, looks at each one's inputs and outputs (or the task's own
review template) and decides: approve, reject, soft-reject, bonus, block, qualify, one
unit at a time or in bulk. Decisions go through `mephisto.tools.provider_review`.

- `app.py`: the Starlette app and its JSON API (token, cookie, body checks);
- `queries.py`: what it reads (keyset pages of units, one unit, tasks and counts);
- `decisions.py`: a decision's JSON checked and made a `Decision`;
- `server.py`: uvicorn on a bound socket, in the foreground or a thread;
- `command.py`: the `review` click command;
- `static/`: the page (hand-written HTML, JS and CSS; no build step).

It may import `mephisto.db`, `mephisto.data_model`, `mephisto.tools` and
`mephisto.operations.payments`; nothing imports it but the CLI. Importing it starts
nothing.
"""

from __future__ import annotations

__all__: list[str] = []
