"""Bonuses on Prolific, paid exactly once.

Prolific pays a bonus in two calls: set it up (`POST /submissions/bonus-payments/`,
which pays nothing and returns a bulk bonus id) and pay it
(`POST /bulk-bonus-payments/{id}/pay/`, which is not idempotent: sent twice, it pays
twice). So the record of each payment's request token (kind `bonus`) says how far it
got, and is written before each step that pays:

- `created`: the bulk bonus id is stored (before paying); a retry pays that one. A
  set-up whose answer was lost leaves an unpaid bulk bonus on Prolific: harmless.
- `paying`: the pay call was sent, with the number of bonuses of this amount the
  submission showed before (`seen_before`). If the call failed where Prolific may
  have paid (no answer, 5xx), a retry looks at the submission's `bonus_payments`:
  one more of this amount means it was paid. Prolific pays asynchronously, so until
  `SETTLE_SECONDS` have passed the retry pays nothing and says to wait; after that, no
  sign of it means it was not paid, and it is sent again. A pay call Prolific refused
  (4xx) or that never left (no connection) goes back to `created`.
- `paid`: final; a retry returns the bulk bonus id.

Bonuses are paid on a submission (`<submission id>,<amount>`): the unit's, or the
worker's latest, so that the submission shows them.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.providers.prolific.client import (
    PROVIDER_TYPE,
    ProlificAPIError,
    ProlificClient,
)
from mephisto.errors import ProviderError

if TYPE_CHECKING:
    from mephisto.data_model.payment import Payment
    from mephisto.db.database import MephistoDB

BONUS = "bonus"
SETTLE_SECONDS = 3600.0
CREATED, PAYING, PAID = "created", "paying", "paid"


def amount_text(amount: float) -> str:
    """A bonus in the study's currency with two decimals, as Prolific's CSV wants it."""
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise ProviderError(PROVIDER_TYPE, f"a bonus must be at least 0.01, not {amount!r}")
    return str(value)


class Bonuses:
    def __init__(self, db: MephistoDB, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def _put(self, token: str, record: dict[str, Any]) -> None:
        self.db.put_provider_record(PROVIDER_TYPE, BONUS, token, record)

    def pay(self, client: ProlificClient, payment: Payment, submission_id: str) -> str:
        """Pay `payment` on this submission; returns the bulk bonus id."""
        token = payment.request_token
        rec = self.db.get_provider_record(PROVIDER_TYPE, BONUS, token)
        if rec is None:
            amount = amount_text(payment.amount)
            study_id = str(client.get(f"submissions/{submission_id}/")["study_id"])
            made = client.post("submissions/bonus-payments/", {
                "study_id": study_id, "csv_bonuses": f"{submission_id},{amount}\n",
            })
            rec = {"bonus_id": str(made["id"]), "study_id": study_id,
                   "submission_id": submission_id, "cents": _cents(amount), "state": CREATED}
            self._put(token, rec)
        rec = dict(rec)
        if rec["state"] == PAID:
            return str(rec["bonus_id"])
        if rec["state"] == PAYING:
            if self._seen(client, rec) > rec["seen_before"]:
                return self._paid(token, rec)
            waited = self.clock() - rec["sent_at"]
            if waited < SETTLE_SECONDS:
                raise ProviderError(
                    PROVIDER_TYPE, f"bonus {rec['bonus_id']} may have been paid already: its "
                    f"pay call failed without an answer {waited:.0f} s ago and Prolific pays "
                    f"asynchronously; it is not sent again before it shows on submission "
                    f"{rec['submission_id']} or {SETTLE_SECONDS:.0f} s have passed: retry "
                    "later", retryable=True)
        rec.update(state=PAYING, seen_before=self._seen(client, rec), sent_at=self.clock())
        self._put(token, rec)
        try:
            client.post(f"bulk-bonus-payments/{rec['bonus_id']}/pay/")
        except ProlificAPIError as exc:
            if not exc.maybe_done:  # refused, or never sent: nothing was paid
                self._put(token, {**rec, "state": CREATED})
            raise
        return self._paid(token, rec)

    def _paid(self, token: str, rec: dict[str, Any]) -> str:
        self._put(token, {**rec, "state": PAID})
        return str(rec["bonus_id"])

    @staticmethod
    def _seen(client: ProlificClient, rec: dict[str, Any]) -> int:
        """How many bonuses of this amount the submission shows as paid."""
        submission = client.get(f"submissions/{rec['submission_id']}/")
        paid = submission.get("bonus_payments") or []
        return sum(1 for cents in paid if abs(float(cents) - rec["cents"]) < 0.5)


def _cents(amount: str) -> int:
    return int(Decimal(amount) * 100)
