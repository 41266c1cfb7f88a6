"""SplitModels in every state, with statuses made by the operator's own transitions.

Shared by the kstatus tests (Flux) and the Argo CD health.lua tests, so both judge exactly what
the operator writes.
"""

from __future__ import annotations

from typing import Any

from splitcore.result import ComponentResult, Reason, Verification
from splitlearn_operator import status as states
from splitlearn_operator.status import ServingState, ServingStatus, SplitModelStatus

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
COMPONENTS = tuple(
    ComponentResult(name, f"GPT2{name.capitalize()}Model", start, end, end - start,
                    3_000_000_000, 12_000_000_000, T1, "float32",
                    f"/models/{name}/x_2-10_{name}.pt",
                    f"/models/{name}/x_2-10_{name}_metadata.json", "ab" * 32,
                    f"{name}/x_2-10_{name}.pt")
    for name, start, end in (("bottom", 0, 2), ("trunk", 2, 10), ("top", 10, 12))
)  # fmt: skip


def fixtures() -> dict[str, dict[str, Any]]:
    """Resources in each state, with statuses made by the operator's own transitions."""
    running = states.reconciling(SplitModelStatus(), 1, "x-1", "h1", "models", T0)
    done = states.ready(running, 1, COMPONENTS, True, Verification(True, "3.1e-07"), T1)
    failed = states.stalled(running, 1, Reason.OOM_KILLED, "out of memory", T1)
    queued = states.queued(SplitModelStatus(), 1, "h1", 2, 2, T0)
    changed = states.reconciling(done, 2, "x-2", "h2", "models", T2)
    recorded = states.ready(running, 1, COMPONENTS, True, None, T1, None, "h1")
    endpoint = "x-trunk.ml.svc:50051"

    def serving(replicas: int, ready: int, **state: Any) -> SplitModelStatus:
        served = ServingStatus(endpoint, replicas, ready, "ab" * 32, "2-10")
        values = {"current": True, "ready_on_current": ready, "complete": True, **state}
        return states.with_serving(recorded, 1, "h1", ServingState(served, **values), T2)

    def body(status: SplitModelStatus | None, generation: int = 1, **meta: Any) -> dict[str, Any]:
        result: dict[str, Any] = {
            "apiVersion": "splitlearn.io/v1alpha1", "kind": "SplitModel",
            "metadata": {"name": "x", "namespace": "ml", "generation": generation, **meta},
            "spec": {"modelPath": "gpt2", "splitStorageConfig": {"splitConfig": "2-10"}},
        }  # fmt: skip
        if status is not None:
            result["status"] = status.to_dict()
        return result

    return {
        "no-status": body(None),
        "queued": body(queued),
        "in-progress": body(running),
        "ready": body(done),
        "failed": body(failed),
        "spec-changed": body(done, generation=2),
        "reconciling-new-generation": body(changed, generation=2),
        "terminating": body(done, deletionTimestamp=T2, finalizers=["splitlearn.io/finalizer"]),
        "serving-rolling-out": body(serving(2, 1, complete=False)),
        "served": body(serving(2, 2)),
        "serving-scaled-to-zero": body(serving(0, 0)),
        "serving-stalled": body(
            serving(
                1,
                0,
                complete=False,
                problem=(Reason.SERVING_CRASH_LOOP, "pod x-trunk-1 keeps exiting: corrupt trunk"),
            )
        ),
    }


KSTATUS = {
    "no-status": "Current",  # cli-utils: nothing to compare yet (Argo shows Progressing)
    "queued": "InProgress",
    "in-progress": "InProgress",
    "ready": "Current",
    "failed": "Failed",
    "spec-changed": "InProgress",
    "reconciling-new-generation": "InProgress",
    "terminating": "Terminating",
    "serving-rolling-out": "InProgress",
    "served": "Current",
    "serving-scaled-to-zero": "Current",
    "serving-stalled": "Failed",
}
