"""Paying workers beyond a unit's reward (bonuses), exactly once.

Every payment is written to the database first (status `recorded`, committed), then
the provider is asked to make it with the payment's request token, then the outcome is
recorded (`paid` with the provider's reference, or `failed` with the error). A retry
sends the same record, so a provider that deduplicates on the token (MTurk) or checks
its own records (Prolific, the mock) never pays twice; a crash between the provider's
answer and our record leaves the payment `recorded`, and `settle_payments` finishes it
the same way.

Several processes (operators, the review app) may settle or retry the same payment at
once: each first holds it (`MephistoDB.claim_payment`, a conditional UPDATE), so only
one asks the provider; the others skip it (`settle_payments`) or are told another
process is paying it (`retry_payment`, an `InvalidTransition`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mephisto.data_model.payment import Payment
from mephisto.data_model.status import PaymentStatus
from mephisto.errors import InvalidTransition, MephistoError, ProviderError

if TYPE_CHECKING:
    from mephisto.abstractions.crowd_provider import CrowdProvider
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = ["pay_bonus", "retry_payment", "send_payment", "settle_payments"]


def pay_bonus(
    db: MephistoDB,
    provider: CrowdProvider,
    worker_id: str,
    amount: float,
    reason: str,
    unit_id: str | None = None,
    requester_id: str | None = None,
) -> Payment:
    """Record a bonus for a worker, then pay it. `requester_id` defaults to the unit's.
    Raises `ProviderError` when the provider fails (the payment stays, `failed`, for
    `retry_payment`)."""
    from mephisto.operations.budget import check_spending

    if requester_id is None:
        if unit_id is None:
            raise MephistoError("a bonus needs a unit or a requester to pay it")
        requester_id = str(db.get_unit(unit_id)["requester_id"])
    with db.transaction() as conn:
        if unit_id is not None:  # a bonus for a unit counts against its run's budgets
            task_run_id = str(db.get_unit(unit_id)["task_run_id"])
            db.lock_for_spending(conn, task_run_id)
            check_spending(db, task_run_id, float(amount), f"a bonus of ${amount:,.2f}")
        payment_id = db.new_payment(
            requester_id, worker_id, str(provider.PROVIDER_TYPE), amount, reason,
            unit_id=unit_id,
        )
    return send_payment(db, provider, Payment(db, payment_id))


def retry_payment(db: MephistoDB, provider: CrowdProvider, payment_id: str) -> Payment:
    """Try a payment again (same request token). A paid one is returned as it is."""
    payment = Payment(db, payment_id)
    if payment.is_paid:
        return payment
    return send_payment(db, provider, payment)


def settle_payments(db: MephistoDB, provider: CrowdProvider) -> list[Payment]:
    """Finish every payment of this provider left `recorded` (a crash) or `failed`.
    Returns them as they ended; failures are logged, not raised."""
    done = []
    pending = [str(PaymentStatus.RECORDED), str(PaymentStatus.FAILED)]
    for payment in db.find_payments(provider_type=str(provider.PROVIDER_TYPE), status=pending):
        try:
            done.append(send_payment(db, provider, payment))
        except InvalidTransition as exc:  # another process is paying it right now
            logger.info("payment %s left to the process paying it: %s", payment.db_id, exc)
        except ProviderError as exc:
            logger.warning("payment %s not settled: %s", payment.db_id, exc)
            done.append(Payment(db, payment.db_id))
    return done


def send_payment(db: MephistoDB, provider: CrowdProvider, payment: Payment) -> Payment:
    """Ask the provider to make a recorded payment and record the outcome (raises
    `ProviderError` after recording a failure). The payment is held while the provider
    is asked: `InvalidTransition` if another process holds it; a payment found paid is
    returned as it is."""
    if not db.claim_payment(payment.db_id):
        return Payment(db, payment.db_id)
    payment = Payment(db, payment.db_id)  # as it is now that it is ours
    try:
        ref = provider.pay_bonus(payment)
    except ProviderError as exc:
        db.update_payment(payment.db_id, PaymentStatus.FAILED, error=str(exc))
        raise
    except Exception as exc:  # an SDK's own error: recorded, then reported as the provider's
        db.update_payment(payment.db_id, PaymentStatus.FAILED, error=repr(exc))
        raise ProviderError(str(provider.PROVIDER_TYPE), f"paying a bonus failed: {exc}",
                            retryable=True) from exc
    except BaseException:  # interrupted, outcome unknown: let go (`recorded`, to settle)
        db.release_payment(payment.db_id)
        raise
    db.update_payment(payment.db_id, PaymentStatus.PAID, provider_ref=ref)
    return Payment(db, payment.db_id)
