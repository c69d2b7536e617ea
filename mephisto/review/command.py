"""`mephisto review`: serve the review app for a task, a run or everything, and print
the URL with the session's token. The command the CLI adds (`cli.add_command`)."""

from __future__ import annotations

import secrets

import click

__all__ = ["review"]


@click.command("review")
@click.option("--task", "task_name", help="Review this task's runs only.")
@click.option("--run", "run_id", help="Review this task run only.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but this machine lets others reach the app.")
@click.option("--database", envvar="MEPHISTO_DATABASE_URL", help="Database URL.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
def review(task_name: str | None, run_id: str | None, port: int, host: str,
           database: str | None, no_browser: bool) -> None:
    """Review submitted work in a browser: approve, reject, bonus, block, qualify."""
    from mephisto.cli import _handle_errors

    _handle_errors(_serve)(task_name, run_id, port, host, database, no_browser)


def _serve(task_name: str | None, run_id: str | None, port: int, host: str,
           database: str | None, no_browser: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mephisto.db import MephistoDB
    from mephisto.errors import ConfigError
    from mephisto.review.app import create_app, settle_pending_payments
    from mephisto.review.server import ReviewServer, is_local_host

    console, err = Console(), Console(stderr=True)
    db = MephistoDB(database)
    try:
        token = secrets.token_urlsafe(24)
        app = create_app(db, token, task_name=task_name, run_id=run_id, settle=False)
        settled = settle_pending_payments(db, app.state.run_ids)
        if settled:
            paid = sum(1 for p in settled if p.is_paid)
            console.print(f"Settled {len(settled)} pending bonus payment(s): {paid} paid"
                          + ("" if paid == len(settled) else
                             f", {len(settled) - paid} still failing (see the log)"))
        try:
            server = ReviewServer(app, host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        if not is_local_host(host):
            err.print(f"[bold yellow]Warning:[/] serving on {escape(host)}: anyone who can "
                      "reach this address and has the URL can make review decisions and "
                      "pay bonuses. Traffic is not encrypted.", soft_wrap=True)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{server.port}/?token={token}"
        console.print(f"Reviewing at [bold]{escape(url)}[/] (Ctrl-C stops)", soft_wrap=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(url)
        server.run()
    finally:
        db.shutdown()
