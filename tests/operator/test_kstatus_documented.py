"""The operator's statuses, judged by kstatus's documented rules rather than by our model of them.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) is what Flux's health checks and `kpt live status`
compute. Its rules for a custom resource are written down in two places, quoted below:

* the README, https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/README.md
* `Compute` and its generic checks,
  https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/status/status.go and
  https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/status/generic.go,
  with their examples for custom resources in `TestCRDGenericStatus`,
  https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/status/status_compute_test.go

`DOCUMENTED` holds those examples with kstatus's verdict for each; `documented_kstatus` applies
the rules in the documented order and must reproduce every example before it judges anything
the operator writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from splitcore.result import Reason, Verification
from splitlearn_operator import status as states
from splitlearn_operator.status import SplitModelStatus
from support.status_fixtures import COMPONENTS, KSTATUS, T0, T1, T2, fixtures

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"

# (object, verdict). The first five are TestCRDGenericStatus's objects (kind MyCR) with the
# verdicts that test expects; the others spell out what the README and generic.go say.
DOCUMENTED: dict[str, tuple[str, str]] = {
    # status_compute_test.go, crdNoStatus -> CurrentStatus. README: "the absence of any
    # conditions means everything is normal".
    "crdNoStatus": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 1, name: test, namespace: qual}
    """, CURRENT),
    # crdMismatchStatusGeneration -> InProgressStatus. README: "If the `generation` and the
    # `observedGeneration` of a resource does not match, it means there are changes that the
    # controller has not yet seen, and therefore not acted upon."
    "crdMismatchStatusGeneration": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {name: test, namespace: qual, generation: 2}
        status: {observedGeneration: 1}
    """, IN_PROGRESS),
    # crdReady -> CurrentStatus. README, "The Ready Condition": "If there is a `Ready`
    # condition and it is `True`, the library will consider the resource to be fully reconciled."
    "crdReady": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {name: test, namespace: qual, generation: 1}
        status:
          conditions:
            - {type: Ready, status: "True", message: All looks ok, reason: AllOk}
    """, CURRENT),
    # crdNotReady -> InProgressStatus. README: "If there is a `Ready` condition and it is
    # `False`, the library will consider the resource to be in the process of reconciling."
    "crdNotReady": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 1, name: test, namespace: qual}
        status:
          observedGeneration: 1
          conditions:
            - {type: Ready, status: "False", reason: NotReadyYet}
    """, IN_PROGRESS),
    # crdNoCondition -> CurrentStatus: conditions kstatus does not know are ignored.
    "crdNoCondition": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {name: test, namespace: qual, generation: 1}
        status:
          conditions:
            - {type: SomeCondition, status: "False"}
    """, CURRENT),
    # README: "Reconciling: The controller is currently working on reconciling the latest
    # changes." generic.go: a Reconciling condition with status True gives InProgressStatus.
    "reconciling": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 3, name: test, namespace: qual}
        status:
          observedGeneration: 3
          conditions:
            - {type: Reconciling, status: "True", reason: Working}
    """, IN_PROGRESS),
    # README: "Stalled: The controller has encountered an error during the reconcile process
    # or it has made insufficient progress (timeout)." generic.go: Stalled True gives
    # FailedStatus.
    "stalled": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 3, name: test, namespace: qual}
        status:
          observedGeneration: 3
          conditions:
            - {type: Stalled, status: "True", reason: Broken}
    """, FAILED),
    # generic.go checks the generation before any condition: a Stalled condition written for
    # an older generation does not make the resource Failed once its spec has changed.
    "stalledOnAnOlderGeneration": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 4, name: test, namespace: qual}
        status:
          observedGeneration: 3
          conditions:
            - {type: Stalled, status: "True", reason: Broken}
    """, IN_PROGRESS),
    # status.go: when neither Reconciling nor Stalled is True, Compute falls back to the
    # Ready condition (checkReadyCondition): Ready False is still InProgress...
    "abnormalFalseReadyFalse": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 1, name: test, namespace: qual}
        status:
          observedGeneration: 1
          conditions:
            - {type: Ready, status: "False", reason: Waiting}
            - {type: Reconciling, status: "False", reason: Waiting}
            - {type: Stalled, status: "False", reason: Waiting}
    """, IN_PROGRESS),
    # ...and checkReadyCondition: "For now we just treat an unknown condition value as
    # InProgress."
    "readyUnknown": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata: {generation: 1, name: test, namespace: qual}
        status:
          conditions:
            - {type: Ready, status: Unknown, reason: Starting}
    """, IN_PROGRESS),
    # README: "Terminating: The resource is in the process of being deleted." generic.go
    # checks metadata.deletionTimestamp first of all.
    "terminating": ("""
        apiVersion: something/v1
        kind: MyCR
        metadata:
          generation: 1
          name: test
          namespace: qual
          deletionTimestamp: "2026-01-01T00:00:00Z"
        status:
          conditions:
            - {type: Stalled, status: "True", reason: Broken}
    """, TERMINATING),
}  # fmt: skip


def documented_kstatus(body: Mapping[str, Any]) -> str:
    """kstatus's `Compute` for a custom resource, step by step as status.go and generic.go
    order it: deletion, then generation, then Reconciling/Stalled, then Ready, else Current."""
    metadata = body.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return TERMINATING
    status = body.get("status") or {}
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and generation != observed:
        return IN_PROGRESS
    conditions = status.get("conditions") or []
    for condition in conditions:  # the first True one of the two decides
        if condition["status"] == "True" and condition["type"] == "Reconciling":
            return IN_PROGRESS
        if condition["status"] == "True" and condition["type"] == "Stalled":
            return FAILED
    for condition in conditions:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return CURRENT
        if condition["type"] == "Ready" and condition["status"] in ("False", "Unknown"):
            return IN_PROGRESS
    return CURRENT


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_the_rules_reproduce_every_documented_example(name):
    document, verdict = DOCUMENTED[name]
    assert documented_kstatus(yaml.safe_load(document)) == verdict


# ---------------------------------------------------------------------------- our statuses


def resource(status: SplitModelStatus, generation: int) -> dict[str, Any]:
    """A SplitModel at `metadata.generation` with what the operator wrote in its status."""
    return {
        "apiVersion": "splitlearn.io/v1alpha1",
        "kind": "SplitModel",
        "metadata": {"name": "gpt2", "namespace": "ml", "generation": generation},
        "status": status.to_dict(),
    }


def operator_states() -> dict[str, tuple[dict[str, Any], str]]:
    """Each state the status builders produce, as the resource an observer reads, with the
    verdict kstatus must give it."""
    empty = SplitModelStatus()
    running = states.reconciling(empty, 1, "gpt2-1", "h1", "models", T0)
    done = states.ready(running, 1, COMPONENTS, True, Verification(True, "3.1e-07"), T1)
    planned = states.ready(running, 1, COMPONENTS, False, None, T1)
    failed = states.stalled(running, 1, Reason.JOB_FAILED, "exit code 1", T1)
    retried = states.reconciling(failed, 2, "gpt2-2", "h2", "models", T2)
    next_generation = states.reconciling(done, 2, "gpt2-2", "h2", "models", T2)
    return {
        "queued": (resource(states.queued(empty, 1, "h1", 5, 5, T0), 1), IN_PROGRESS),
        "reconciling": (resource(running, 1), IN_PROGRESS),
        "ready": (resource(done, 1), CURRENT),
        "ready, plan only": (resource(planned, 1), CURRENT),
        "stalled": (resource(failed, 1), FAILED),
        # The user changed the spec; the operator has not written a status for it yet.
        "ready, spec changed": (resource(done, 2), IN_PROGRESS),
        "stalled, spec changed (the user's fix)": (resource(failed, 2), IN_PROGRESS),
        "reconciling the new generation": (resource(next_generation, 2), IN_PROGRESS),
        "queued for the new generation": (
            resource(states.queued(failed, 2, "h2", 5, 5, T2), 2),
            IN_PROGRESS,
        ),
        "retried after a failure": (resource(retried, 2), IN_PROGRESS),
        "ready after a failure": (
            resource(states.ready(retried, 2, COMPONENTS, True, None, T2), 2),
            CURRENT,
        ),
    }


@pytest.mark.parametrize("name", list(operator_states()))
def test_each_state_the_operator_writes_gets_the_documented_verdict(name):
    body, verdict = operator_states()[name]
    assert documented_kstatus(body) == verdict


@pytest.mark.parametrize("name", list(operator_states()))
def test_ready_alone_tells_the_same_as_the_abnormal_true_conditions(name):
    """README, "The Ready Condition": readers that know only `Ready` (kstatus's fallback,
    `kubectl wait --for=condition=Ready`) must reach the same verdict: Ready is True exactly
    when neither Reconciling nor Stalled is, and every condition speaks of the observed
    generation."""
    status = SplitModelStatus.from_dict(operator_states()[name][0]["status"])
    assert {c.type for c in status.conditions} == {"Ready", "Reconciling", "Stalled"}
    abnormal = status.is_true("Reconciling") or status.is_true("Stalled")
    assert status.is_true("Ready") is not abnormal
    assert not (status.is_true("Reconciling") and status.is_true("Stalled"))
    assert {c.observed_generation for c in status.conditions} == {status.observed_generation}


@pytest.mark.parametrize("name", list(KSTATUS))
def test_the_shared_fixtures_expect_what_kstatus_documents(name):
    """support.status_fixtures' table (also read by the Argo CD tests) against the documents."""
    assert documented_kstatus(fixtures()[name]) == KSTATUS[name]
