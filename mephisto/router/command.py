"""`mephisto router`: run a task router; `mephisto router token`: mint an operator token.

The secret comes from `MEPHISTO_ROUTER_SECRET`, or else from `<data dir>/router_secret`
(made on first use, readable by this user only), so `mephisto router` and
`mephisto router token` on one host agree without any setup.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import click

__all__ = ["router_group"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _secret() -> str:
    from mephisto.router.app import secret_from_env
    from mephisto.router.auth import new_secret
    from mephisto.utils.dirs import get_data_dir
    from mephisto.utils.files import write_private_file

    secret = secret_from_env()
    if secret is not None:
        return secret
    path = get_data_dir() / "router_secret"
    if path.exists():
        return path.read_text().strip()
    secret = new_secret()
    write_private_file(path, secret + "\n")
    return secret


def _seconds(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is no duration (e.g. 3600, 90m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.group("router", invoke_without_command=True)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              envvar="PORT", help="Port to listen on ($PORT when set, as on Heroku).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where static files and uploads in transit are kept (default: a "
                   "temporary directory).")
@click.option("--storage", default="", envvar="MEPHISTO_ROUTER_STORAGE",
              help="s3://bucket/prefix: take static files and uploads through this bucket "
                   "when the operator names the same one ($MEPHISTO_ROUTER_STORAGE).")
@click.option("--storage-endpoint-url", default="", envvar="MEPHISTO_ROUTER_STORAGE_ENDPOINT",
              help="Endpoint of an S3-compatible store such as MinIO (default: AWS S3; "
                   "$MEPHISTO_ROUTER_STORAGE_ENDPOINT).")
@click.pass_context
def router_group(ctx: click.Context, host: str, port: int, cache_dir: Path | None,
                 storage: str, storage_endpoint_url: str) -> None:
    """Serve tasks to workers for an operator that dials in from anywhere.

    Run it on a host workers can reach; the operator (a run script with
    mephisto.architect=remote) connects to it with a token from `mephisto router token`.
    With --storage, credentials come from boto3's usual chain (AWS_* variables, ~/.aws).
    """
    if ctx.invoked_subcommand is not None:
        return
    from mephisto.cli import _handle_errors

    _handle_errors(_serve)(host, port, cache_dir, storage, storage_endpoint_url)


def _serve(host: str, port: int, cache_dir: Path | None, storage_url: str = "",
           storage_endpoint_url: str = "") -> None:
    from mephisto.router.app import create_router_app, serve
    from mephisto.router.storage import S3Storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    storage = None
    if storage_url:
        storage = S3Storage.from_url(storage_url, storage_endpoint_url or None)
        storage.check()
        click.echo(f"mephisto router: files through storage {storage!r}", err=True)
    app = create_router_app(_secret(), cache_dir, storage=storage)

    def ready(bound: int) -> None:
        click.echo(f"mephisto router: serving on http://{host}:{bound}/ ; operators dial "
                   f"ws://<this host>:{bound}/_mephisto/operator with a token from "
                   "`mephisto router token`", err=True)

    try:
        asyncio.run(serve(app, host, port, ready))
    except KeyboardInterrupt:
        pass


@router_group.command("token")
@click.option("--ttl", default="7d", show_default=True,
              help="How long the token is valid (seconds, or with s/m/h/d).")
def token(ttl: str) -> None:
    """Print an operator token for this host's router secret."""
    from mephisto.router.auth import mint_token

    click.echo(mint_token(_secret(), _seconds(ttl)))
