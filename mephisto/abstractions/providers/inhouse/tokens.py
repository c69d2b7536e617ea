"""Participant tokens of the in-house provider, and the requester secret that signs them.

A token is `<payload>.<mac>`, both base64url without padding:

- payload: `1:<key id>:<expires at, Unix seconds>:<participant name>` (ASCII);
- mac: the first 16 bytes of HMAC-SHA256 over the payload under the requester's
  secret (128 bits, with a domain prefix so the secret signs nothing else).

It fits the 128 characters the task server allows for a `provider_data` string (names
are at most 56 characters of `[A-Za-z0-9_.@+-]`). The key id (6 characters derived
from the secret, not revealing it) only lets a refusal say "another requester's link"
instead of "a changed link"; the MAC decides.

The secret is 32 random bytes in `<Mephisto home>/inhouse/<requester name>.key`,
created with mode 600 in a folder of mode 700, never in the database or the logs.
Deleting that file (and registering again) rotates it: every link made before stops
working.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from mephisto.errors import ForbiddenAction, MalformedRequest, ProviderError
from mephisto.utils.config_handler import get_mephisto_home
from mephisto.utils.files import write_private_file

PROVIDER_TYPE = "inhouse"
TOKEN_VERSION = "1"
MAX_TOKEN_CHARS = 128
MAC_BYTES = 16
SECRET_BYTES = 32
PARTICIPANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,55}")
REQUESTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAC_CHARS = 22  # base64 of MAC_BYTES
_TOKEN_SHAPE = re.compile(
    rf"([A-Za-z0-9_-]{{1,{MAX_TOKEN_CHARS - 1 - _MAC_CHARS}}})\.([A-Za-z0-9_-]{{{_MAC_CHARS}}})")
_MAC_DOMAIN = b"mephisto-inhouse-link\x00"
_KEY_ID_DOMAIN = b"mephisto-inhouse-key-id\x00"

ASK_AGAIN = "Ask the researcher for a new link."


@dataclass(frozen=True)
class LinkClaims:
    """What a valid token says: who the participant is and until when it works."""

    participant: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def format_time(unix_seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix_seconds))


def check_participant_name(name: str) -> str:
    """`name` if it can be a participant's name in a token, else `ValueError`."""
    if not isinstance(name, str) or not PARTICIPANT_NAME.fullmatch(name):
        raise ValueError(
            f"participant name {name!r} must be 1 to 56 characters of letters, digits "
            "and _ . @ + - (starting with a letter or digit)")
    return name


class SigningKey:
    """A requester's secret: signs and verifies participant tokens. Its repr shows the
    key id only."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"a signing secret has at least {SECRET_BYTES} bytes")
        self._secret = secret
        self.key_id = _b64(hmac.digest(secret, _KEY_ID_DOMAIN, "sha256")[:4])

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, _MAC_DOMAIN + payload, "sha256")[:MAC_BYTES]

    def sign(self, participant: str, expires_at: float) -> str:
        """A token naming `participant`, valid until `expires_at` (Unix seconds)."""
        check_participant_name(participant)
        payload = f"{TOKEN_VERSION}:{self.key_id}:{int(expires_at)}:{participant}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: object, now: float | None = None) -> LinkClaims:
        """The claims of a token this key signed. Expiry is checked against `now` (Unix
        seconds) unless it is None. Raises `MalformedRequest` for something that is no
        token (cut, garbled) and `ForbiddenAction` for a token this key did not sign
        (changed, another requester's) or one that expired; the messages are written
        for the participant, who sees them on the task page."""
        shape = _TOKEN_SHAPE.fullmatch(token) if isinstance(token, str) else None
        if shape is None:
            raise MalformedRequest(
                "This link is not valid: part of it is missing or changed. Open the link "
                f"exactly as you received it. {ASK_AGAIN}")
        encoded_payload, encoded_mac = shape.groups()
        try:
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
            if _b64(payload) != encoded_payload or _b64(mac) != encoded_mac:
                raise ValueError("not canonical base64")  # one token, one spelling
            version, key_id, expires, participant = payload.decode("ascii").split(":", 3)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MalformedRequest(
                f"This link is not valid: it is garbled. {ASK_AGAIN}") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            if key_id != self.key_id:
                raise ForbiddenAction(
                    "This link was made for another requester's studies, not this one. "
                    + ASK_AGAIN)
            raise ForbiddenAction(f"This link is not valid: it was changed. {ASK_AGAIN}")
        if version != TOKEN_VERSION or not expires.isdigit() or \
                not PARTICIPANT_NAME.fullmatch(participant):
            raise MalformedRequest(f"This link is not valid: its content is unknown. {ASK_AGAIN}")
        claims = LinkClaims(participant, int(expires))
        if now is not None and now >= claims.expires_at:
            raise ForbiddenAction(
                f"This link expired on {format_time(claims.expires_at)}. {ASK_AGAIN}")
        return claims


def assignment_for_token(token: str) -> str:
    """The provider assignment id the page shim derives from a token: one per link, so a
    reload (or a second tab) gets the agent it already has."""
    return "inhouse-" + token.rpartition(".")[2][:16]


# -- the secret file ---------------------------------------------------------------------


def check_requester_name(name: str) -> str:
    if not isinstance(name, str) or not REQUESTER_NAME.fullmatch(name):
        raise ProviderError(
            PROVIDER_TYPE,
            f"requester name {name!r} must be 1 to 64 characters of letters, digits and "
            "_ . - (starting with a letter or digit): it names the secret's file")
    return name


def secret_path(requester_name: str) -> Path:
    """Where the requester's signing secret lives (the file may not exist)."""
    return get_mephisto_home() / "inhouse" / f"{check_requester_name(requester_name)}.key"


def create_secret(requester_name: str) -> Path:
    """Make the requester's secret unless it exists (an existing one is kept, so the
    links already sent keep working). Safe against a concurrent creator: the file
    appears whole or not at all."""
    path = secret_path(requester_name)
    try:
        _write_new_secret(path)
    except OSError as exc:
        raise ProviderError(PROVIDER_TYPE, f"cannot write the signing secret {path}: "
                            f"{exc.strerror or type(exc).__name__}") from None
    return path


def _write_new_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    # exclusive: an existing secret (or one another process made first) is kept
    write_private_file(path, _b64(secrets.token_bytes(SECRET_BYTES)) + "\n", exclusive=True)


def load_key(requester_name: str) -> SigningKey:
    """The requester's signing key; `ProviderError` saying what to do when its file is
    missing, unreadable, readable by others or damaged."""
    path = secret_path(requester_name)
    register = f"register it with `mephisto register inhouse name={requester_name}`"
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ProviderError(
            PROVIDER_TYPE, f"requester {requester_name!r} has no signing secret at {path}: "
            + register) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProviderError(PROVIDER_TYPE, f"cannot read the signing secret {path}: "
                            f"{type(exc).__name__}") from None
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise ProviderError(
            PROVIDER_TYPE, f"the signing secret {path} is readable by other users: "
            f"run `chmod 600 {path}`")
    try:
        return SigningKey(_unb64(text))
    except (binascii.Error, ValueError):
        raise ProviderError(
            PROVIDER_TYPE, f"the signing secret {path} is damaged: delete it and "
            + register + " (links made before stop working)") from None
