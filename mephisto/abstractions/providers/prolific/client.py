"""A small client of Prolific's REST API (https://api.prolific.com/api/v1/...), on httpx.

Every failure becomes a `ProlificAPIError` (a `ProviderError` naming "prolific"): what
happened and what to do, `retryable` when the same call may work later (timeouts,
connection errors, 429, 5xx), `status` when Prolific answered, and `maybe_done` when
Prolific may have acted on the request although we saw no answer (a timeout while
reading, a dropped connection, a 5xx). Calls that move money look at `maybe_done`
before they send anything again. The API token travels only in the `Authorization`
header: it is in no message, log line or error.

httpx is imported when a client is made, so importing the provider needs nothing
beyond the core install; without it the error names `pip install 'mephisto[prolific]'`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mephisto.errors import ProviderError

if TYPE_CHECKING:
    import httpx

PROVIDER_TYPE = "prolific"
BASE_URL = "https://api.prolific.com"
API_PREFIX = "/api/v1"
TOKENS_PAGE = "https://app.prolific.com/researcher/tokens/"
TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_PAGES = 50  # pages followed by `list_all` (100 results a page)
_DETAIL_CHARS = 300


def register_hint(requester_name: str | None = None) -> str:
    name = f"name={requester_name} " if requester_name else ""
    return (f"create a token at {TOKENS_PAGE} and run `mephisto register prolific "
            f"{name}api_key=<token>` (or set PROLIFIC_API_KEY)")


class ProlificAPIError(ProviderError):
    """A call to Prolific's API that failed. `status`: the HTTP status Prolific answered
    (None: no answer). `maybe_done`: Prolific may have carried the request out."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 maybe_done: bool = False) -> None:
        super().__init__(PROVIDER_TYPE, message, retryable=retryable)
        self.status = status
        self.maybe_done = maybe_done


class ProlificClient:
    """Calls Prolific's API with one API token. Paths are relative to `/api/v1/`."""

    def __init__(self, api_key: str, base_url: str = BASE_URL,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is installed with the tests
            raise ProviderError(
                PROVIDER_TYPE, "the Prolific provider needs httpx: pip install 'mephisto[prolific]'"
            ) from exc
        self._httpx = httpx
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Token {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
        )

    def close(self) -> None:
        self._http.close()

    # -- verbs --------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, body=body)

    def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated list (`results`, following `_links.next.href`)."""
        items: list[Any] = []
        answer = self.get(path, params)
        for _ in range(MAX_PAGES):
            items.extend(answer.get("results") or [])
            following = ((answer.get("_links") or {}).get("next") or {}).get("href")
            if not following:
                return items
            answer = self.request("GET", str(following))
        return items

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None) -> Any:
        httpx = self._httpx
        url = path if path.startswith("http") else f"{API_PREFIX}/{path.lstrip('/')}"
        what = f"{method} {url.split('?')[0]}"
        try:
            response = self._http.request(method, url, params=params, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProlificAPIError(
                f"{what}: cannot reach {BASE_URL} ({type(exc).__name__}): check the network "
                "and try again", retryable=True) from None
        except httpx.TimeoutException as exc:
            raise ProlificAPIError(
                f"{what}: no answer within {TIMEOUT_SECONDS:.0f} s ({type(exc).__name__}); "
                "Prolific may have done it: try again later", retryable=True,
                maybe_done=True) from None
        except httpx.TransportError as exc:
            raise ProlificAPIError(
                f"{what}: the connection failed ({type(exc).__name__}); Prolific may have "
                "done it: try again later", retryable=True, maybe_done=True) from None
        return _answer(what, response)


def _answer(what: str, response: httpx.Response) -> Any:
    status = response.status_code
    if status < 300:
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError:
            return response.text
    detail = _detail(response)
    if status in (401, 403):
        raise ProlificAPIError(
            f"{what}: the API token was refused (HTTP {status}{detail}): {register_hint()}",
            retryable=False, status=status)
    if status == 429:
        raise ProlificAPIError(
            f"{what}: rate limited by Prolific (HTTP 429): wait a minute and try again",
            retryable=True, status=status)
    if status >= 500:
        raise ProlificAPIError(
            f"{what}: Prolific failed (HTTP {status}{detail}); it may have done it: "
            "try again later", retryable=True, status=status, maybe_done=True)
    raise ProlificAPIError(f"{what}: refused by Prolific (HTTP {status}{detail})",
                           retryable=False, status=status)


def _detail(response: httpx.Response) -> str:
    """Prolific's explanation of an error (`{"error": {"detail": ...}}` or any text)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        error = body.get("error", body) if isinstance(body, dict) else body
        found = error.get("detail", error) if isinstance(error, dict) else error
        text = found if isinstance(found, str) else json.dumps(found, sort_keys=True)
    text = " ".join(text.split())[:_DETAIL_CHARS]
    return f": {text}" if text else ""
