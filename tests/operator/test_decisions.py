"""`decisions.decide`: every branch of "given the cluster and a spec, what happens", and the
slot count it is given (`jobs.Slots`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.decisions import (
    Adopt,
    ClaimFix,
    ClaimState,
    ClaimTaken,
    Conflict,
    Create,
    Done,
    Observed,
    Queue,
    WaitForClaim,
    decide,
    is_done,
)
from splitlearn_operator.jobs import PRUNE_FLOOR, Slots
from splitlearn_operator.spec import ResolvedSpec, resolve_spec
from splitlearn_operator.status import SplitModelStatus
from splitlearn_operator.view import JobInfo, Writer
from support.status_fixtures import COMPONENTS, T0, T1

NAME, GENERATION = "gpt2-a", 3


@pytest.fixture
def spec(body, config) -> ResolvedSpec:
    return resolve_spec(body, config)


@pytest.fixture
def created_claim_spec(body, config) -> ResolvedSpec:
    body["spec"]["storage"] = {"size": "1Gi"}
    return resolve_spec(body, config)


def seen(**changes: Any) -> Observed:
    """A cluster where everything this SplitModel needs exists and nothing runs."""
    defaults: dict[str, Any] = {
        "name": NAME,
        "jobs": (),
        "writers": (Writer("2026-01-01T00:00:00Z", NAME),),
        "source_claim": True,
        "storage_claim": ClaimState.PRESENT,
        "running": 0,
        "limit": 2,
    }
    return Observed(**{**defaults, **changes})


def job(name: str, spec_hash: str | None, **changes: Any) -> JobInfo:
    info = JobInfo("ml", name, builders.SPLIT, spec_hash, finished=False, deleting=False)
    return replace(info, **changes)


def this_job(spec: ResolvedSpec, **changes: Any) -> JobInfo:
    return job(builders.job_name(NAME, spec.spec_hash), spec.spec_hash, **changes)


def running(spec: ResolvedSpec) -> SplitModelStatus:
    job_name = builders.job_name(NAME, spec.spec_hash)
    return states.reconciling(SplitModelStatus(), GENERATION, job_name, spec.spec_hash, None, T0)


def ready(spec: ResolvedSpec) -> SplitModelStatus:
    return states.ready(running(spec), GENERATION, COMPONENTS, True, None, T1)


def stalled(spec: ResolvedSpec, reason: Reason) -> SplitModelStatus:
    return states.stalled(running(spec), GENERATION, reason, "why", T1)


# ---------------------------------------------------------------------- done already


def test_a_recorded_result_of_this_spec_and_generation_is_done(spec):
    assert is_done(ready(spec), spec.spec_hash, GENERATION)
    assert decide(seen(), spec, ready(spec), GENERATION) == Done()


def test_a_change_that_keeps_the_spec_hash_keeps_the_recorded_split(spec):
    """deletionPolicy or spec.serving alone bumps the generation, not the spec hash: the
    recorded split stands (no second Job), whatever its server is doing."""
    recorded = states.ready(running(spec), GENERATION, COMPONENTS, True, None, T1, None,
                            spec.spec_hash)  # fmt: skip
    assert is_done(recorded, spec.spec_hash, GENERATION + 1)
    assert decide(seen(), spec, recorded, GENERATION + 1) == Done()
    serving_stalled = states.stalled(recorded, GENERATION, Reason.SERVING_CRASH_LOOP, "x", T1)
    assert is_done(serving_stalled, spec.spec_hash, GENERATION)
    # A failure is of its generation only: the user's change may have fixed it.
    assert not is_done(stalled(spec, Reason.OOM_KILLED), spec.spec_hash, GENERATION + 1)


def test_a_new_deletion_policy_on_a_recorded_split_only_moves_the_claims_owners(
    created_claim_spec,
):
    spec = created_claim_spec
    recorded = states.ready(running(spec), GENERATION, COMPONENTS, True, None, T1, None,
                            spec.spec_hash)  # fmt: skip
    moved = seen(storage_claim=ClaimState.OURS_OTHER_OWNERS)
    assert decide(moved, spec, recorded, GENERATION + 1) == Done(ClaimFix.SET_OWNERS)
    assert decide(seen(storage_claim=ClaimState.OURS), spec, recorded, GENERATION + 1) == Done()


def test_components_of_an_older_spec_are_not_this_specs_result(spec):
    older = states.ready(running(spec), GENERATION, COMPONENTS, True, None, T1, None,
                         "0123456789")  # fmt: skip
    rerun = states.reconciling(older, GENERATION + 1, "j", spec.spec_hash, None, T1)
    assert not is_done(rerun, spec.spec_hash, GENERATION + 1)
    assert not is_done(states.stalled(rerun, GENERATION + 1, Reason.OOM_KILLED, "x", T1),
                       "0123456789", GENERATION + 1)  # fmt: skip


def test_a_failure_only_the_user_fixes_is_done(spec):
    failed = stalled(spec, Reason.OOM_KILLED)
    assert is_done(failed, spec.spec_hash, GENERATION)
    assert decide(seen(), spec, failed, GENERATION) == Done()


@pytest.mark.parametrize("reason", sorted(Reason.waiting()))
def test_a_waiting_stall_is_looked_at_again(spec, reason):
    waiting = stalled(spec, reason)
    assert not is_done(waiting, spec.spec_hash, GENERATION)
    assert isinstance(decide(seen(), spec, waiting, GENERATION), Create)


def test_a_result_of_another_spec_is_not_done(spec):
    assert not is_done(ready(spec), "0123456789", GENERATION)
    assert not is_done(running(spec), spec.spec_hash, GENERATION)  # still running
    assert not is_done(SplitModelStatus(), spec.spec_hash, GENERATION)


# ---------------------------------------------------------------------- conflict


def test_an_older_writer_of_the_same_files_is_a_conflict(spec):
    older = Writer("2025-12-31T00:00:00Z", "first")
    writers = (Writer("2026-01-01T00:00:00Z", NAME), older)
    assert decide(seen(writers=writers), spec, SplitModelStatus(), GENERATION) == Conflict(
        older, "models"
    )


def test_the_oldest_writer_goes_ahead(spec):
    writers = (Writer("2026-01-01T00:00:00Z", NAME), Writer("2026-01-02T00:00:00Z", "second"))
    decision = decide(seen(writers=writers), spec, SplitModelStatus(), GENERATION)
    assert isinstance(decision, Create)


def test_the_same_creation_time_is_settled_by_name(spec):
    writers = (Writer(T0, NAME), Writer(T0, "a-first"))
    decision = decide(seen(writers=writers), spec, SplitModelStatus(), GENERATION)
    assert decision == Conflict(Writer(T0, "a-first"), "models")


def test_a_conflict_comes_before_the_claims(spec):
    older = Writer("2025-12-31T00:00:00Z", "first")
    cluster = seen(writers=(older,), source_claim=False, storage_claim=ClaimState.MISSING)
    assert decide(cluster, spec, SplitModelStatus(), GENERATION) == Conflict(older, "models")


# ---------------------------------------------------------------------- claims


def test_a_missing_source_claim_is_waited_for(spec):
    decision = decide(seen(source_claim=False), spec, SplitModelStatus(), GENERATION)
    assert decision == WaitForClaim("models-src", Reason.SOURCE_CLAIM_NOT_FOUND, "spec.source")


def test_a_missing_named_storage_claim_is_waited_for(spec):
    cluster = seen(storage_claim=ClaimState.MISSING)
    decision = decide(cluster, spec, SplitModelStatus(), GENERATION)
    assert decision == WaitForClaim("models", Reason.STORAGE_CLAIM_NOT_FOUND, "spec.storage")


def test_the_source_claim_is_looked_for_first(spec):
    cluster = seen(source_claim=False, storage_claim=ClaimState.MISSING)
    decision = decide(cluster, spec, SplitModelStatus(), GENERATION)
    assert isinstance(decision, WaitForClaim) and decision.claim == "models-src"


def test_a_missing_claim_the_operator_makes_is_created_with_the_job(created_claim_spec):
    cluster = seen(storage_claim=ClaimState.MISSING)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert decision == Create(
        builders.job_name(NAME, created_claim_spec.spec_hash), (), ClaimFix.CREATE
    )


def test_a_taken_claim_name_is_refused(created_claim_spec):
    cluster = seen(storage_claim=ClaimState.FOREIGN)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert decision == ClaimTaken("gpt2-a-storage")


def test_a_claim_of_another_deletion_policy_gets_new_owners(created_claim_spec):
    cluster = seen(storage_claim=ClaimState.OURS_OTHER_OWNERS)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert isinstance(decision, Create) and decision.claim_fix is ClaimFix.SET_OWNERS


def test_a_claim_as_wanted_needs_nothing(created_claim_spec):
    cluster = seen(storage_claim=ClaimState.OURS)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert isinstance(decision, Create) and decision.claim_fix is None


def test_a_plan_needs_no_storage_claim(body, config):
    body["spec"]["splitStorageConfig"]["autoSave"] = False
    plan = resolve_spec(body, config)
    cluster = seen(writers=(), storage_claim=ClaimState.MISSING)
    decision = decide(cluster, plan, SplitModelStatus(), GENERATION)
    assert decision == Create(builders.job_name(NAME, plan.spec_hash), ())


# ---------------------------------------------------------------------- adopt


@pytest.mark.parametrize("finished", [False, True])
def test_the_job_of_this_spec_is_adopted_never_duplicated(spec, finished):
    mine = this_job(spec, finished=finished)
    cluster = seen(jobs=(mine,), running=2, limit=2)  # adopting takes no new slot
    assert decide(cluster, spec, running(spec), GENERATION) == Adopt(mine)


def test_an_adopted_job_carries_the_claim_fix(created_claim_spec):
    mine = this_job(created_claim_spec)
    cluster = seen(jobs=(mine,), storage_claim=ClaimState.OURS_OTHER_OWNERS)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert decision == Adopt(mine, ClaimFix.SET_OWNERS)


# ---------------------------------------------------------------------- queue or create


def test_a_free_slot_creates_the_job(spec):
    decision = decide(seen(running=1, limit=2), spec, SplitModelStatus(), GENERATION)
    assert decision == Create(builders.job_name(NAME, spec.spec_hash), ())


def test_no_free_slot_queues(spec):
    decision = decide(seen(running=2, limit=2), spec, SplitModelStatus(), GENERATION)
    assert decision == Queue((), 2, 2)


def test_running_jobs_of_older_specs_are_stopped_first(spec):
    old = job("gpt2-a-0000000000", "0000000000")
    done = job("gpt2-a-1111111111", "1111111111", finished=True)
    going = job("gpt2-a-2222222222", "2222222222", deleting=True)
    cleanup = job("gpt2-a-cleanup-3333333333", "3333333333", component=builders.CLEANUP)
    cluster = seen(jobs=(old, done, going, cleanup), running=1, limit=1)
    decision = decide(cluster, spec, SplitModelStatus(), GENERATION)
    # The old Job's slot is freed by stopping it: this spec's Job takes it.
    assert decision == Create(builders.job_name(NAME, spec.spec_hash), (old,))


def test_a_queued_spec_still_stops_older_jobs(spec):
    old = job("gpt2-a-0000000000", "0000000000")
    decision = decide(seen(jobs=(old,), running=3, limit=2), spec, SplitModelStatus(), GENERATION)
    assert decision == Queue((old,), 2, 2)


# ---------------------------------------------------------------------- the slot count


class FakeView:
    """The two reads `Slots` makes."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], list[JobInfo]] = {}
        self.active = 0

    def jobs_of(self, namespace: str, splitmodel: str) -> list[JobInfo]:
        return self.jobs.get((namespace, splitmodel), [])

    def running_jobs(self) -> int:
        return self.active


def test_a_created_job_holds_its_slot_until_the_watch_shows_it():
    view, slots = FakeView(), Slots()
    slots.take("ml", "a", "a-job")
    assert slots.count(view, limit=5) == 1  # created, not seen yet
    view.jobs[("ml", "a")] = [job("a-job", "h")]
    view.active = 1
    assert slots.count(view, limit=1) == 1  # seen: counted once, at the limit exactly


def test_a_created_job_seen_finished_frees_its_slot():
    view, slots = FakeView(), Slots()
    slots.take("ml", "a", "a-job")
    view.jobs[("ml", "a")] = [job("a-job", "h", finished=True)]
    assert slots.count(view, limit=1) == 0


def test_a_released_slot_is_free():
    view, slots = FakeView(), Slots()
    slots.take("ml", "a", "a-job")
    slots.release("ml", "a", "a-job")
    assert slots.count(view, limit=5) == 0


def test_seen_jobs_are_forgotten_without_reaching_the_limit():
    view, slots = FakeView(), Slots()
    for index in range(PRUNE_FLOOR):
        name = f"m{index}"
        slots.take("ml", name, f"{name}-job")
        view.jobs[("ml", name)] = [job(f"{name}-job", "h", finished=True)]
    assert slots.count(view, limit=10**6) == 0  # no memory of Jobs the watch has shown


def test_a_queued_spec_still_creates_or_owns_its_claim(created_claim_spec):
    """Waiting for a slot does not wait for the claim: it is made while the Job queues."""
    cluster = seen(storage_claim=ClaimState.MISSING, running=2, limit=2)
    decision = decide(cluster, created_claim_spec, SplitModelStatus(), GENERATION)
    assert decision == Queue((), 2, 2, ClaimFix.CREATE)
