"""A requester's AWS credentials, kept where AWS tools keep them: a profile of the shared
credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), named
after the requester, written with mode 0600. They never go to the database or a log.

As in Mephisto, a sandbox requester is named `<name>_sandbox` and uses the profile
`<name>`: MTurk's sandbox takes the same AWS keys as the live site.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from mephisto.errors import ProviderError
from mephisto.utils.files import write_private_file

__all__ = ["SANDBOX_SUFFIX", "credentials_file", "profile_for", "read_credentials",
           "write_profile"]

SANDBOX_SUFFIX = "_sandbox"
KEYS = ("access_key_id", "secret_access_key")
_PROFILE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_SECRET = re.compile(r"[\x21-\x7e]{16,256}")  # printable, no spaces: one line of the file
_PROFILE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def credentials_file() -> Path:
    """The shared credentials file boto3 reads."""
    return Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()


def profile_for(provider_type: str, requester_name: str, sandbox: bool) -> str:
    """The AWS profile of a requester (`ProviderError` for a name no profile can have)."""
    profile = requester_name
    if sandbox and requester_name.endswith(SANDBOX_SUFFIX) \
            and len(requester_name) > len(SANDBOX_SUFFIX):
        profile = requester_name[: -len(SANDBOX_SUFFIX)]
    if not _PROFILE.fullmatch(profile):
        raise ProviderError(provider_type, (
            f"requester name {requester_name!r} cannot name an AWS profile: use up to 64 "
            "letters, digits and _.@+-"))
    return profile


def read_credentials(provider_type: str, credentials: Mapping[str, str]) -> tuple[str, str]:
    """(access key id, secret access key) from `register_requester`'s credentials, or a
    `ProviderError` saying what is missing or malformed (never echoing a secret)."""
    unknown = sorted(set(credentials) - set(KEYS))
    missing = [k for k in KEYS if not credentials.get(k)]
    if unknown or missing:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unknown:
            problems.append("unknown " + ", ".join(unknown))
        raise ProviderError(provider_type, (
            f"registering needs access_key_id and secret_access_key (an IAM user's keys with "
            f"MTurk access); {'; '.join(problems)}"))
    key_id, secret = str(credentials["access_key_id"]), str(credentials["secret_access_key"])
    if not _ACCESS_KEY_ID.fullmatch(key_id):
        raise ProviderError(provider_type, (
            "access_key_id does not look like an AWS access key id (16 or more capital "
            "letters and digits, e.g. AKIA...)"))
    if not _SECRET.fullmatch(secret):
        raise ProviderError(provider_type, (
            "secret_access_key does not look like an AWS secret access key (16 or more "
            "printable characters, no spaces)"))
    return key_id, secret


def write_profile(profile: str, key_id: str, secret: str) -> Path:
    """Set the keys of `[profile]` in the shared credentials file (other profiles, lines
    and comments stay; a session token of that profile is dropped, it belonged to the
    old keys). The file is replaced atomically and readable by its owner only."""
    path = credentials_file()
    old = path.read_text() if path.exists() else ""
    text = _with_profile(old, profile, [f"aws_access_key_id = {key_id}",
                                        f"aws_secret_access_key = {secret}"])
    write_private_file(path, text)
    return path


def _with_profile(text: str, profile: str, settings: list[str]) -> str:
    lines = text.splitlines()
    header = f"[{profile}]"
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        return "\n".join([*lines, header, *settings]) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    kept = [line for line in lines[start + 1:end]
            if line.split("=", 1)[0].strip().lower() not in _PROFILE_KEYS]
    return "\n".join([*lines[:start + 1], *settings, *kept, *lines[end:]]) + "\n"
