"""Where Prolific API tokens are kept: `<mephisto home>/prolific/credentials.json`.

The file maps requester names to tokens. Its folder is created readable by this user
only (0700) and the file is written 0600, atomically (a temporary file renamed over
it). A file that others can read is refused, as ssh refuses a private key. A requester
with no stored token uses the environment variable `PROLIFIC_API_KEY`. Tokens never go
to the database or the logs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from mephisto.abstractions.providers.prolific.client import PROVIDER_TYPE, register_hint
from mephisto.errors import ProviderError
from mephisto.utils.config_handler import env_setting, get_mephisto_home
from mephisto.utils.files import write_private_file

ENV_KEY = "PROLIFIC_API_KEY"
MAX_KEY_CHARS = 512


def credentials_path() -> Path:
    return get_mephisto_home() / "prolific" / "credentials.json"


def check_api_key(api_key: object) -> str:
    """The token, if it looks like one (printable, no spaces); `ProviderError` if not."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise ProviderError(PROVIDER_TYPE, f"api_key is empty: {register_hint()}")
    key = api_key.strip()
    if len(key) > MAX_KEY_CHARS or not key.isprintable() or any(c.isspace() for c in key):
        raise ProviderError(PROVIDER_TYPE, "api_key is not a Prolific API token (it must be "
                            f"one line of printable characters without spaces): {register_hint()}")
    return key


def store_api_key(requester_name: str, api_key: str) -> Path:
    """Save the token of `requester_name`; returns the file's path."""
    path = credentials_path()
    stored = _read(path) if path.exists() else {}
    stored[requester_name] = check_api_key(api_key)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_private_file(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return path


def load_api_key(requester_name: str | None) -> str | None:
    """The token of `requester_name` (stored), else `PROLIFIC_API_KEY`, else None."""
    path = credentials_path()
    if requester_name is not None and path.exists():
        key = _read(path).get(requester_name)
        if isinstance(key, str) and key:
            return key
    return env_setting(ENV_KEY)


def _read(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProviderError(PROVIDER_TYPE, f"{path} can be read by other users: "
                            f"run `chmod 600 {path}` (and replace the tokens it holds)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProviderError(PROVIDER_TYPE, f"cannot read {path} ({type(exc).__name__}): "
                            "fix or delete it, then register the requester again") from None
    if not isinstance(data, dict):
        raise ProviderError(PROVIDER_TYPE, f"{path} is not a JSON object of requester "
                            "names to tokens: delete it and register the requester again")
    return {str(k): v for k, v in data.items() if isinstance(v, str)}
