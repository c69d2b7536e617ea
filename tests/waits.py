"""Waiting in tests for something another thread or process does: poll a condition
until it holds, failing with what was awaited once the time is up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], what: str = "the condition",
             timeout: float = 60.0, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


async def until(condition: Callable[[], object], timeout: float = 5.0,
                poll: float = 0.02) -> None:
    """`wait_for` on an event loop (the loop keeps running while it waits)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(poll)
