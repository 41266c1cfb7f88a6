"""The claims a SplitModel needs: found (index first, the API on a miss), created, owned.

A claim the operator creates is owned by the SplitModel only under `deletionPolicy: Delete`,
so a policy change moves its ownerReferences; a claim the user names is only looked for.
"""

from __future__ import annotations

from typing import Any

import kopf

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator.api import PVCS, ApiError
from splitlearn_operator.config import LABEL_MANAGED_BY, MANAGED_BY
from splitlearn_operator.context import Context, key_of
from splitlearn_operator.decisions import ClaimFix, ClaimState, ClaimTaken, WaitForClaim
from splitlearn_operator.spec import ResolvedSpec
from splitlearn_operator.status import EventReason
from splitlearn_operator.view import ClusterView


class Claims:
    """Reads and writes of the claims, for `jobs`."""

    def __init__(self, context: Context) -> None:
        self.context = context

    async def get(self, namespace: str, claim: str) -> dict[str, Any] | None:
        try:
            return await self.context.client.get(PVCS, namespace, claim)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def exists(self, view: ClusterView, namespace: str, claim: str) -> bool:
        """The watch's answer, confirmed against the API when it says no (it may lag)."""
        return view.has_claim(namespace, claim) or await self.get(namespace, claim) is not None

    async def storage_state(
        self, body: dict[str, Any], spec: ResolvedSpec, view: ClusterView
    ) -> ClaimState:
        """The storage claim as found; one the operator creates is always read from the API
        (its labels and ownerReferences decide what to do)."""
        namespace, _ = key_of(body)
        if spec.storage is None:
            return ClaimState.PRESENT
        if not spec.storage.create:
            present = await self.exists(view, namespace, spec.storage.name)
            return ClaimState.PRESENT if present else ClaimState.MISSING
        existing = await self.get(namespace, spec.storage.name)
        if existing is None:
            return ClaimState.MISSING
        metadata = existing["metadata"]
        if metadata.get("labels", {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            return ClaimState.FOREIGN
        wanted = builders.build_pvc(body, spec)["metadata"].get("ownerReferences", [])
        same = metadata.get("ownerReferences", []) == wanted
        return ClaimState.OURS if same else ClaimState.OURS_OTHER_OWNERS

    async def fix(self, body: dict[str, Any], spec: ResolvedSpec, fix: ClaimFix | None) -> None:
        """Create the storage claim, or give it the ownerReferences its policy wants."""
        if fix is None or spec.storage is None:
            return
        namespace, _ = key_of(body)
        wanted = builders.build_pvc(body, spec)
        if fix is ClaimFix.SET_OWNERS:
            owners = {"metadata": {"ownerReferences": wanted["metadata"].get("ownerReferences")}}
            await self.context.client.patch(PVCS, namespace, spec.storage.name, owners)
            return
        try:
            await self.context.client.create(PVCS, namespace, wanted)
        except ApiError as error:
            if error.status != 409:
                raise
            return  # created meanwhile (by an earlier try): nothing to announce
        await self.context.event(
            body, "Normal", EventReason.CLAIM_CREATED,
            f"created PersistentVolumeClaim {spec.storage.name}",
        )  # fmt: skip

    async def refuse(self, body: dict[str, Any], step: WaitForClaim | ClaimTaken) -> None:
        """Stalled: a missing claim is looked for again (creating it is the fix); a taken
        name is final until the spec changes."""
        if isinstance(step, ClaimTaken):
            await self.context.stall(
                body, Reason.STORAGE_CLAIM_CONFLICT,
                f"PersistentVolumeClaim {step.claim} exists and was not created by the "
                "operator; set spec.storage.claimName to use it",
            )  # fmt: skip
            raise kopf.PermanentError("the storage claim's name is taken")
        namespace, _ = key_of(body)
        wait = self.context.config.extras.wait_retry_seconds
        await self.context.retry_later(
            body, step.reason,
            f"PersistentVolumeClaim {step.claim} ({step.field}.claimName) does not exist in "
            f"{namespace}; create it, it is looked for again every {wait:g}s",
            wait, f"waiting for claim {step.claim}",
        )  # fmt: skip
