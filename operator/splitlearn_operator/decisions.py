"""Given what the cluster holds and a spec, what a reconcile does: one pure function.

`decide` takes a snapshot (`Observed`) and returns one `Decision`; `jobs` reads the snapshot
and carries the decision out. Keeping the choice pure makes every branch a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.spec import ResolvedSpec
from splitlearn_operator.status import SplitModelStatus
from splitlearn_operator.view import JobInfo, Writer

#: Stalls a user fixes outside the SplitModel (creating a claim, deleting a rival): retried.
WAITING_REASONS = Reason.waiting()


class ClaimState(Enum):
    """The storage claim as found: `PRESENT` for a claim the user names (nothing more is
    checked), the other three for one the operator creates."""

    MISSING = "missing"
    PRESENT = "present"
    OURS = "ours"  # created by the operator, owned as the deletionPolicy wants
    OURS_OTHER_OWNERS = "ours-other-owners"  # deletionPolicy changed since
    FOREIGN = "foreign"  # the name is taken by a claim the operator did not create


class ClaimFix(Enum):
    """What the storage claim needs before the Job."""

    CREATE = "create"
    SET_OWNERS = "set-owners"


@dataclass(frozen=True)
class Observed:
    """What one reconcile knows of the cluster: read from the view, claims confirmed."""

    name: str
    jobs: tuple[JobInfo, ...]  # this SplitModel's Jobs
    writers: tuple[Writer, ...]  # the SplitModels writing the same files, this one included
    source_claim: bool  # the source claim exists (or none is named)
    storage_claim: ClaimState
    running: int  # split Jobs holding a slot (max_models), this SplitModel's included
    limit: int  # max_models


@dataclass(frozen=True)
class Done:
    """This spec's result is recorded, or it failed for good: nothing to redo. A change that
    kept the spec hash (deletionPolicy) may still want the claim's owners set."""

    claim_fix: ClaimFix | None = None


@dataclass(frozen=True)
class Conflict:
    """An older SplitModel writes the same files: wait until it goes."""

    owner: Writer
    claim: str


@dataclass(frozen=True)
class WaitForClaim:
    """A claim the spec names does not exist: wait until the user creates it."""

    claim: str
    reason: Reason
    field: str


@dataclass(frozen=True)
class ClaimTaken:
    """The claim the operator would create exists and is not the operator's."""

    claim: str


@dataclass(frozen=True)
class Adopt:
    """This spec's Job exists (a restart, a reverted spec): follow it, never duplicate it."""

    job: JobInfo
    claim_fix: ClaimFix | None = None


@dataclass(frozen=True)
class Queue:
    """Every slot is taken: wait. Jobs of older specs are stopped all the same."""

    stale: tuple[JobInfo, ...]
    running: int
    limit: int
    claim_fix: ClaimFix | None = None


@dataclass(frozen=True)
class Create:
    """Stop the Jobs of older specs (two writers must never race), then create this one."""

    job_name: str
    stale: tuple[JobInfo, ...]
    claim_fix: ClaimFix | None = None


Decision = Done | Conflict | WaitForClaim | ClaimTaken | Adopt | Queue | Create


def is_done(status: SplitModelStatus, spec_hash: str, generation: int) -> bool:
    """The status already holds this spec's result (whatever its server is doing: a change of
    spec.serving alone never splits again) or a failure only the user fixes."""
    if states.split_recorded(status, spec_hash):
        return True
    if status.spec_hash != spec_hash or status.observed_generation != generation:
        return False
    stalled = status.condition(states.STALLED)
    return (
        stalled is not None and stalled.status == states.TRUE
        and stalled.reason not in WAITING_REASONS
    )  # fmt: skip


def claim_step(seen: Observed, spec: ResolvedSpec) -> WaitForClaim | ClaimTaken | ClaimFix | None:
    """Both claims must exist before the Job (a missing one leaves its pod Pending)."""
    if spec.source_claim and not seen.source_claim:
        return WaitForClaim(spec.source_claim, Reason.SOURCE_CLAIM_NOT_FOUND, "spec.source")
    if spec.storage is None:
        return None
    state = seen.storage_claim
    if state is ClaimState.MISSING:
        if spec.storage.create:
            return ClaimFix.CREATE
        return WaitForClaim(spec.storage.name, Reason.STORAGE_CLAIM_NOT_FOUND, "spec.storage")
    if state is ClaimState.FOREIGN:
        return ClaimTaken(spec.storage.name)
    return ClaimFix.SET_OWNERS if state is ClaimState.OURS_OTHER_OWNERS else None


def decide(
    seen: Observed, spec: ResolvedSpec, status: SplitModelStatus, generation: int
) -> Decision:
    """In order: done already, conflict, claims, adopt this spec's Job, queue or create."""
    spec_hash = spec.spec_hash
    if is_done(status, spec_hash, generation):
        step = claim_step(seen, spec) if spec.storage is not None else None
        return Done(step if step is ClaimFix.SET_OWNERS else None)
    owner = min(seen.writers, default=None)
    if owner is not None and owner.name != seen.name and spec.storage is not None:
        return Conflict(owner, spec.storage.name)
    step = claim_step(seen, spec)
    if isinstance(step, WaitForClaim | ClaimTaken):
        return step
    job_name = builders.job_name(seen.name, spec_hash)
    existing = next((job for job in seen.jobs if job.name == job_name), None)
    if existing is not None:
        return Adopt(existing, step)
    stale = tuple(job for job in seen.jobs if job.active and job.spec_hash != spec_hash)
    running = seen.running - len(stale)  # the stale ones are stopped first
    if running >= seen.limit:
        return Queue(stale, running, seen.limit, step)
    return Create(job_name, stale, step)
