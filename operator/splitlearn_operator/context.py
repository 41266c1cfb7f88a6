"""What every verb of the reconciliation shares: the API client, the metrics, one lock per
SplitModel, and the only way the operator writes a SplitModel (its status, and Events).

`write_status` re-reads the resource and retries on a stale resourceVersion, so concurrent
writers never lose each other's changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import kopf

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.api import EVENTS, SPLITMODELS, ApiError, Client
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.status import Condition, EventReason, SplitModelStatus

Transform = Callable[[dict[str, Any], SplitModelStatus], SplitModelStatus | None]
STATUS_WRITE_ATTEMPTS = 8


def key_of(body: dict[str, Any]) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def generation_of(body: dict[str, Any]) -> int:
    return int(body["metadata"].get("generation", 1))


def object_logger(body: dict[str, Any]) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines name the SplitModel (kopf's formatters print `[namespace/name]`
    in text and an `object` reference in JSON)."""
    metadata = body.get("metadata", {})
    reference = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "namespace": metadata.get("namespace"),
    }
    return logging.LoggerAdapter(logging.getLogger("splitlearn.operator"), {"k8s_ref": reference})


class Context:
    """One per process; each verb (`jobs`, `record`, `cleanup`) holds it."""

    def __init__(self, config: OperatorConfig, client: Client, metrics: Metrics) -> None:
        self.config = config
        self.client = client
        self.metrics = metrics
        # Held while a SplitModel is reconciled or a result recorded: one writer at a time.
        self.locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def live_splitmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The SplitModel as it is now; None when it is gone or going."""
        try:
            body = await self.client.get(SPLITMODELS, namespace, name)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return None if body["metadata"].get("deletionTimestamp") else body

    async def write_status(
        self, namespace: str, name: str, transform: Transform, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Read-modify-write of `.status` with the resourceVersion as a precondition.

        The first attempt uses `body` when given (the handler's copy, usually current); a
        conflict re-reads the resource.
        """
        for _ in range(STATUS_WRITE_ATTEMPTS):
            if body is None:
                body = await self.client.get(SPLITMODELS, namespace, name)
            current = SplitModelStatus.from_dict(body.get("status"))
            new = transform(body, current)
            if new is None or new == current:
                return body
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": new.to_dict(),
            }
            try:
                return await self.client.patch(SPLITMODELS, namespace, name, patch, "status")
            except ApiError as error:
                if error.status != 409:
                    raise
                body = None
        raise kopf.TemporaryError("the SplitModel keeps changing; will retry", delay=1)

    async def event(
        self, body: dict[str, Any], kind: str, reason: Reason | EventReason, message: str
    ) -> None:
        """Post an Event; losing one must never fail a reconciliation."""
        try:
            await self.client.create(
                EVENTS, body["metadata"]["namespace"],
                builders.build_event(body, kind, reason, message),
            )  # fmt: skip
        except ApiError as error:
            object_logger(body).warning("could not post the %s Event: %s", reason, error)

    async def stall(self, body: dict[str, Any], reason: Reason, message: str) -> None:
        """Ready=False, Stalled=True, lastFailure, a Warning Event (once per transition)."""
        namespace, name = key_of(body)
        generation = generation_of(body)
        moment = states.now_rfc3339()
        before = SplitModelStatus.from_dict(body.get("status")).condition(states.STALLED)
        await self.write_status(
            namespace,
            name,
            lambda _, status: states.stalled(status, generation, reason, message, moment),
            body,
        )
        await self.announce_stall(body, before, reason, message)

    async def announce_stall(
        self, body: dict[str, Any], before: Condition | None, reason: Reason, message: str
    ) -> None:
        """Log, count and post a Warning Event for a stall, once per transition."""
        if not (before and before.status == states.TRUE and before.reason == reason):
            object_logger(body).warning("stalled: %s: %s", reason, message)
            self.metrics.failures.labels(reason).inc()
            await self.event(body, "Warning", reason, message)

    async def retry_later(
        self, body: dict[str, Any], reason: Reason, message: str, delay: float, why: str
    ) -> None:
        """Stalled until something outside the SplitModel changes; looked at again later."""
        await self.stall(body, reason, message)
        raise kopf.TemporaryError(why, delay=delay)
