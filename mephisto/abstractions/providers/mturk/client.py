"""Talking to MTurk: one requester's boto3 client, and MTurk's failures as `ProviderError`.

boto3 is optional (`pip install "mephisto[mturk]"`) and imported only when a client is
made. Clients come from the client factory, `factory(profile, sandbox)`: by default a
boto3 session on the AWS profile named after the requester (`credentials.py`) against
MTurk's live or sandbox endpoint. Tests and rehearsals install their own with
`use_client_factory` (`mephisto.testing.fake_mturk.FakeMTurk` does), so nothing they do
reaches the network; there is deliberately no environment variable for it.

Every call goes through `MTurkAPI.call`, which turns what botocore raises into
`ProviderError(provider_type, what happened and what to do, retryable)`:
refused credentials and a refused request are final, MTurk's own faults, throttling,
timeouts and lost connections are retryable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mephisto.errors import ProviderError

logger = logging.getLogger(__name__)

__all__ = [
    "INSTALL_HINT", "SANDBOX_ENDPOINT", "ClientFactory", "MTurkAPI", "default_client_factory",
    "require_boto3", "use_client_factory",
]

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
REGION = "us-east-1"  # MTurk's only region
INSTALL_HINT = 'pip install "mephisto[mturk]"'

ClientFactory = Callable[[str, bool], Any]
"""`factory(profile, sandbox)` -> a boto3 `mturk` client for that AWS profile."""

# botocore's error codes for credentials it was given but AWS did not accept
_CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken",
    "ExpiredTokenException", "AccessDeniedException", "AccessDenied",
})
# codes of failures that a later try may not meet
_RETRYABLE_CODES = frozenset({
    "ServiceFault", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "InternalServerError", "Throttling", "ThrottlingException", "TooManyRequestsException",
    "RequestLimitExceeded",
})

_factory: ClientFactory | None = None
_factory_lock = threading.Lock()


def require_boto3(provider_type: str = "mturk") -> Any:
    """boto3, or a `ProviderError` naming the command that installs it."""
    try:
        import boto3
    except ImportError as exc:
        raise ProviderError(
            provider_type, f"needs boto3, which is not installed: {INSTALL_HINT}"
        ) from exc
    return boto3


def default_client_factory(profile: str, sandbox: bool) -> Any:
    """A boto3 MTurk client on the AWS profile `profile` (live or sandbox endpoint)."""
    boto3 = require_boto3("mturk_sandbox" if sandbox else "mturk")
    from botocore.config import Config

    session = boto3.Session(profile_name=profile)
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                    read_timeout=60)
    return session.client("mturk", region_name=REGION, config=config,
                          endpoint_url=SANDBOX_ENDPOINT if sandbox else None)


def use_client_factory(factory: ClientFactory | None) -> ClientFactory | None:
    """Make every MTurk client of this process with `factory(profile, sandbox)` from now
    on (None: boto3 on the AWS profile, the default). Returns the factory it replaced,
    so a test can put it back. Clients already made are kept by their providers."""
    global _factory
    with _factory_lock:
        previous, _factory = _factory, factory
    return previous


def _make_client(profile: str, sandbox: bool) -> Any:
    with _factory_lock:
        factory = _factory or default_client_factory
    return factory(profile, sandbox)


class MTurkAPI:
    """One requester's MTurk: its client (made on first use) and its calls."""

    def __init__(self, provider_type: str, requester_name: str, profile: str,
                 sandbox: bool) -> None:
        self.provider_type = provider_type
        self.requester_name = requester_name
        self.profile = profile
        self.sandbox = sandbox
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = _make_client(self.profile, self.sandbox)
                except ProviderError:
                    raise
                except Exception as exc:
                    raise self.error(exc, "connecting to MTurk") from exc
            return self._client

    def call(self, method: str, doing: str, **params: Any) -> dict[str, Any]:
        """`client.<method>(**params)`; any failure is a `ProviderError` saying that it
        happened while `doing`."""
        client = self.client()
        try:
            result: dict[str, Any] = getattr(client, method)(**params)
        except Exception as exc:
            raise self.error(exc, doing) from exc
        return result

    def call_once(self, method: str, doing: str, **params: Any) -> dict[str, Any] | None:
        """A call carrying a `UniqueRequestToken`: None when MTurk says the token was
        already used, i.e. an earlier try of this very call went through."""
        client = self.client()
        try:
            result: dict[str, Any] = getattr(client, method)(**params)
        except Exception as exc:
            if token_already_used(exc):
                return None
            raise self.error(exc, doing) from exc
        return result

    def register_hint(self) -> str:
        name = self.requester_name
        return (f"`mephisto register {self.provider_type} name={name} "
                "access_key_id=... secret_access_key=...`")

    def error(self, exc: BaseException, doing: str) -> ProviderError:
        """What `exc` (raised by boto3 while `doing`) means, as a `ProviderError`."""
        return translate(exc, doing, self.provider_type, self.requester_name, self.profile,
                         self.register_hint(), self.sandbox)


def error_code(exc: BaseException) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore `ClientError`; ("", "", 0) otherwise."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", "", 0
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return str(error.get("Code") or ""), str(error.get("Message") or ""), int(status)


def token_already_used(exc: BaseException) -> bool:
    """Whether MTurk refused a call because its `UniqueRequestToken` was used before
    (`The idempotency token "..." has already been processed`; `HitAlreadyExists`)."""
    code, message, _status = error_code(exc)
    text = f"{code} {message}".lower()
    return ("idempotency token" in text and "already" in text) or "hitalreadyexists" in text


def translate(
    exc: BaseException, doing: str, provider_type: str, requester_name: str, profile: str,
    register_hint: str, sandbox: bool,
) -> ProviderError:
    from botocore import exceptions as bx

    where = "MTurk's sandbox" if sandbox else "MTurk"
    if isinstance(exc, bx.ProfileNotFound | bx.NoCredentialsError |
                  bx.PartialCredentialsError):
        return ProviderError(provider_type, (
            f"{doing}: no AWS credentials for requester {requester_name!r} (AWS profile "
            f"{profile!r}): register them with {register_hint}"))
    if isinstance(exc, bx.ParamValidationError):
        report = " ".join(str(exc).split())  # one line
        return ProviderError(provider_type, f"{doing}: {where} would refuse the request: {report}")
    if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return ProviderError(provider_type, (
            f"{doing}: {where} did not answer in time ({exc}); try again (a retry is "
            "safe: calls that create or pay carry a request token)"), retryable=True)
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return ProviderError(provider_type, (
            f"{doing}: could not reach {where} ({exc}); check the network and try again"),
            retryable=True)
    code, message, status = error_code(exc)
    if code:
        if code in _CREDENTIAL_CODES:
            return ProviderError(provider_type, (
                f"{doing}: AWS refused the credentials of requester {requester_name!r} "
                f"({code}: {message}); register working ones with {register_hint}"))
        if "linked" in message.lower() and "mechanical turk" in message.lower():
            site = "requestersandbox.mturk.com" if sandbox else "requester.mturk.com"
            return ProviderError(provider_type, (
                f"{doing}: the AWS account of requester {requester_name!r} is not linked "
                f"to an MTurk requester account: link it at https://{site}/developer"))
        if code in _RETRYABLE_CODES or status >= 500:
            return ProviderError(provider_type, (
                f"{doing}: {where} failed ({code}: {message}); try again later"),
                retryable=True)
        return ProviderError(provider_type, f"{doing}: {where} refused ({code}: {message})")
    if isinstance(exc, bx.BotoCoreError):
        return ProviderError(provider_type, f"{doing}: {exc}")
    return ProviderError(provider_type, f"{doing}: {type(exc).__name__}: {exc}")
