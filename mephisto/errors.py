"""Every error this package raises on purpose.

    MephistoError
    ├── ConfigError                  bad configuration: names the key that is wrong
    │   └── UnknownAbstractionError  a blueprint/architect/provider type that is not registered
    ├── DatabaseError                (alias MephistoDBException)
    │   ├── EntryDoesNotExist        (alias EntryDoesNotExistException)
    │   ├── EntryAlreadyExists       (alias EntryAlreadyExistsException)
    │   ├── MigrationError
    │   ├── UnknownStatus            a string that is no unit or agent status (a ValueError too)
    │   └── DatabaseUnavailable      cannot reach or write the database right now (HTTP 503)
    ├── InvalidTransition            a status change the transition table forbids
    ├── RequestError                 bad input from a worker's browser (HTTP 4xx)
    │   ├── MalformedRequest         400: not JSON, missing or wrong-typed fields
    │   ├── ForbiddenAction          403: acting on an agent that is not yours, or closed
    │   ├── UnknownAgent             404: no such agent id
    │   ├── AlreadySubmitted         409: the agent already submitted
    │   └── PayloadTooLarge          413: body over the configured limit
    ├── NotEligible                  a worker may not take (more) work on this run
    ├── AgentGoneError               a live agent ended: what a TaskRunner's act/observe raise
    │   ├── AgentReturnedError       the worker returned the unit
    │   ├── AgentDisconnectedError   the worker's page went away and did not come back
    │   ├── AgentTimeoutError        the unit's time ran out
    │   └── AgentShutdownError       the run is shutting down
    ├── ProviderError                a crowd provider refused or failed a call: names it
    ├── BudgetExceeded               spending would pass a run's or a project's cap: names it
    ├── BuildError                   a front-end build (npm) failed or npm is missing
    ├── ArchiveError                 a backup or export file that cannot be used
    ├── RouterError                  the link between an operator and a remote task router
    │   ├── OperatorUnavailable      the router has no operator to ask right now (HTTP 503)
    │   ├── TokenRefused             an operator token the router does not accept
    │   └── StorageError             the S3-compatible storage of a router's files failed
    └── ShutdownError                the run is shutting down; no new work accepted

Library code raises these; only the CLI and `task_script` turn them into messages and
exit codes.
"""

from __future__ import annotations


class MephistoError(Exception):
    """Base of every error raised on purpose by this package."""


class ConfigError(MephistoError):
    """The configuration is wrong. `key` names the offending setting when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class UnknownAbstractionError(ConfigError):
    """A plugin type name that no registry knows; the message lists the valid ones."""


class DatabaseError(MephistoError):
    """A database operation failed for a reason the caller can act on."""


class EntryDoesNotExist(DatabaseError):
    """No row with the requested id (or key) exists."""


class EntryAlreadyExists(DatabaseError):
    """A row with the same unique key already exists (e.g. a task_name in use)."""


class AgentGoneError(MephistoError):
    """A live agent ended while a `TaskRunner` worked with it; `act`/`observe` raise
    the subclass that says why."""


class AgentReturnedError(AgentGoneError):
    """The worker returned the unit."""


class AgentDisconnectedError(AgentGoneError):
    """The worker's page disconnected and did not come back in time."""


class AgentTimeoutError(AgentGoneError):
    """The unit's time (`assignment_duration_in_seconds`) ran out."""


class AgentShutdownError(AgentGoneError):
    """The run is shutting down."""


class ArchiveError(MephistoError):
    """A backup or export file that cannot be used: unreadable, corrupt, of another
    format or version, or not the kind the command expects."""


class MigrationError(DatabaseError):
    """The schema could not be brought up to date."""


class UnknownStatus(DatabaseError, ValueError):
    """A string that is no status of the data model, e.g. `update_unit(id, status="x")`.
    Also a ValueError, which is what a failed enum lookup raised before."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or written right now (connection lost, server
    restarting, disk full). Usually nothing was committed; when the connection was lost
    at COMMIT the outcome is unknown, so callers retry only what is safe to do twice
    (submits are idempotent; an agent's creation is looked up before its unit is offered
    again). The task server answers it with 503 and `Retry-After`."""

    retry_after = 5  # seconds a client is asked to wait before retrying


# Mephisto's names, kept so review scripts written for it keep working.
MephistoDBException = DatabaseError
EntryDoesNotExistException = EntryDoesNotExist
EntryAlreadyExistsException = EntryAlreadyExists


class InvalidTransition(MephistoError):
    """A status change that the transition table does not allow."""

    def __init__(
        self, kind: str, entity_id: str, old: str, new: str, detail: str | None = None
    ) -> None:
        message = f"{kind} {entity_id}: cannot go from status '{old}' to '{new}'"
        super().__init__(f"{kind} {entity_id}: {detail}" if detail else message)
        self.kind = kind
        self.entity_id = entity_id
        self.old = old
        self.new = new


class RequestError(MephistoError):
    """Bad input from a worker's browser. Maps to an HTTP status; changes nothing."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequest(RequestError):
    status_code = 400


class ForbiddenAction(RequestError):
    status_code = 403


class UnknownAgent(RequestError):
    status_code = 404


class AlreadySubmitted(RequestError):
    status_code = 409


class PayloadTooLarge(RequestError):
    status_code = 413


class NotEligible(MephistoError):
    """The worker cannot take (more) work on this run: blocked, unqualified, failed
    onboarding, at a limit, no unit left, run closed. `reason` is shown to the worker;
    the task server answers it as an agent of None (mephisto-task hangs on an error)."""

    def __init__(self, reason: str, worker_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.worker_id = worker_id


class ProviderError(MephistoError):
    """A crowd provider refused or failed a call (bad credentials, its own 4xx/5xx, a
    timeout). The message names the provider and what to do. `retryable`: the same call
    may succeed later (an outage, a timeout); calls that pay are safe to retry anyway,
    since each carries its payment's request token."""

    def __init__(self, provider_type: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{provider_type}: {message}")
        self.provider_type = provider_type
        self.retryable = retryable


class BudgetExceeded(MephistoError):
    """Launching units or paying a bonus would take a run or a project past its budget.
    Nothing was created or paid. `cap` names the budget ("task run 3", "project 'x'"),
    `limit` is its amount and `needed` what the spending would have brought it to."""

    def __init__(self, cap: str, limit: float, needed: float, what: str) -> None:
        super().__init__(
            f"{what} would bring the spending of {cap} to ${needed:,.2f}, over its budget "
            f"of ${limit:,.2f}; raise it with `mephisto budget` or spend less")
        self.cap = cap
        self.limit = limit
        self.needed = needed


class BuildError(MephistoError):
    """A front-end build failed, or the tool it needs (npm) is missing."""


class RouterError(MephistoError):
    """The link between an operator and a remote task router (`mephisto router`)."""


class OperatorUnavailable(RouterError):
    """The router cannot ask its operator right now: no operator is connected, or the
    link dropped before the answer came. The task server answers it with 503 and
    `Retry-After`; browsers retry (a retried submit is idempotent)."""

    retry_after = 2  # seconds a client is asked to wait before retrying


class TokenRefused(RouterError):
    """An operator token the router does not accept: malformed, signed with another
    router's secret, or expired. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the router refused the operator token: {reason}")
        self.reason = reason


class StorageError(RouterError):
    """The S3-compatible storage that carries a router's static files and uploads
    failed: a missing bucket, an unreachable endpoint, refused credentials, or boto3 not
    installed. `url` is the storage's `s3://bucket/prefix` (it never holds credentials)."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ShutdownError(MephistoError):
    """The operator is shutting down and accepts no new work."""
