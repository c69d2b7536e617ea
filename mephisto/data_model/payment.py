"""A payment: money sent to a worker beyond a unit's pay (a bonus).

It is written to the database before the provider is asked to pay, with a request
token the provider sees on every try (MTurk's `UniqueRequestToken`; providers without
one check their own records), so a retry after a failure or a crash never pays twice.
"""

from __future__ import annotations

from mephisto.data_model.entity import Entity
from mephisto.data_model.status import PaymentStatus


class Payment(Entity):
    _getter = "get_payment"
    _status_field = True
    db_status: str
    requester_id: str
    worker_id: str
    unit_id: str | None
    provider_type: str
    amount: float
    reason: str
    request_token: str
    provider_ref: str | None
    attempts: int
    error: str | None
    claimed_until: float | None  # held by a process asking the provider, until then

    @property
    def status(self) -> PaymentStatus:
        return PaymentStatus(self.db_status)

    @property
    def is_paid(self) -> bool:
        return self.status is PaymentStatus.PAID
