"""The contract between a split Job and the operator: exit codes, reasons, the result document.

`splitcore split` writes one compact JSON document to its result file (the Job pod's
termination message): a `SplitResult` on success, an `ErrorDocument` on failure. The operator
reads it back with the same classes, so the fields, their camelCase spelling and the reason
names exist exactly once. `Reason` is every reason a `Stalled` condition can carry, from the
Job or from the operator, each with what the user does about it (the README's table is
generated from it and checked by a test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import IntEnum, StrEnum
from pathlib import PurePath
from typing import Any, Self

from splitcore.storage import Component


class ExitCode(IntEnum):
    """`splitcore` exit codes; the Job's podFailurePolicy never retries `INVALID`."""

    OK = 0
    FAILURE = 1  # may succeed when retried (a download, a node's trouble)
    INVALID = 2  # bad input: retrying cannot help


class Origin(StrEnum):
    JOB = "job"  # the split container reported it (exit code and error document)
    KUBERNETES = "kubernetes"  # read from the Job, the trunk server and their pods
    OPERATOR = "operator"  # the operator's own checks of the spec and the cluster


@dataclass(frozen=True)
class ReasonDoc:
    origin: Origin
    action: str  # what the user does about it, one sentence
    exit_code: ExitCode | None = None  # for reasons the split container reports
    waits: bool = False  # the operator looks again on a timer (fixed outside the SplitModel)


class Reason(StrEnum):
    """Every reason of a `Stalled` condition, `lastFailure` and Warning Event."""

    # Reported by `splitcore split` (exit code 2 unless said otherwise).
    INVALID_SPLIT_POINTS = "InvalidSplitPoints"
    INVALID_CHECKPOINT = "InvalidCheckpoint"
    UNSUPPORTED_MODEL = "UnsupportedModel"
    INVALID_INPUT = "InvalidInput"
    SOURCE_NOT_FOUND = "SourceNotFound"
    STORAGE_FULL = "StorageFull"
    STORAGE_NOT_WRITABLE = "StorageNotWritable"
    VERIFICATION_FAILED = "VerificationFailed"
    HUB_DOWNLOAD_FAILED = "HubDownloadFailed"
    SOURCE_UNAUTHORIZED = "SourceUnauthorized"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    SOURCE_DIGEST_MISMATCH = "SourceDigestMismatch"
    OUTPUT_LOCKED = "OutputLocked"
    SOURCE_CHANGED = "SourceChanged"
    INTERNAL_ERROR = "InternalError"
    # Read from the Job and its pods.
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    JOB_FAILED = "JobFailed"
    RESULT_MISSING = "ResultMissing"
    # Read from the trunk server's Deployment and pods (spec.serving).
    SERVING_CRASH_LOOP = "ServingCrashLoop"
    SERVING_IMAGE_PULL_FAILED = "ServingImagePullFailed"
    SERVING_SECRET_NOT_FOUND = "ServingSecretNotFound"
    SERVING_FAILED = "ServingFailed"
    # The operator's own checks.
    INVALID_SPEC = "InvalidSpec"
    INVALID_PATH = "InvalidPath"
    INVALID_STORAGE = "InvalidStorage"
    INVALID_MODEL_ID = "InvalidModelId"
    INVALID_MODEL_TYPE = "InvalidModelType"
    INVALID_SPLIT_CONFIG = "InvalidSplitConfig"
    SOURCE_CLAIM_NOT_FOUND = "SourceClaimNotFound"
    STORAGE_CLAIM_NOT_FOUND = "StorageClaimNotFound"
    STORAGE_CLAIM_CONFLICT = "StorageClaimConflict"
    CONFLICT = "Conflict"
    CLEANUP_FAILED = "CleanupFailed"

    @property
    def doc(self) -> ReasonDoc:
        return REASON_DOCS[self]

    @property
    def exit_code(self) -> ExitCode | None:
        return self.doc.exit_code

    @classmethod
    def waiting(cls) -> frozenset[Reason]:
        """Stalls fixed outside the SplitModel (creating a claim, deleting a rival)."""
        return frozenset(reason for reason in cls if reason.doc.waits)


_J, _K, _O = Origin.JOB, Origin.KUBERNETES, Origin.OPERATOR
_INVALID, _FAILURE = ExitCode.INVALID, ExitCode.FAILURE
REASON_DOCS: dict[Reason, ReasonDoc] = {
    Reason.INVALID_SPLIT_POINTS: ReasonDoc(
        _J, "choose split points with 0 < p1 < p2 < the model's layer count", _INVALID
    ),
    Reason.INVALID_CHECKPOINT: ReasonDoc(
        _J, "fix or replace the checkpoint files the message names", _INVALID
    ),
    Reason.UNSUPPORTED_MODEL: ReasonDoc(
        _J, "use a supported family (spec.modelType) or add an adapter", _INVALID
    ),
    Reason.INVALID_INPUT: ReasonDoc(_J, "correct the value the message names", _INVALID),
    Reason.SOURCE_NOT_FOUND: ReasonDoc(
        _J, "check spec.modelPath: it must name a folder on the source claim", _INVALID
    ),
    Reason.STORAGE_FULL: ReasonDoc(
        _J, "grow the storage claim or free space; components finished before stay", _INVALID
    ),
    Reason.STORAGE_NOT_WRITABLE: ReasonDoc(
        _J, "mount the storage claim read-write (and check its fsGroup)", _INVALID
    ),
    Reason.VERIFICATION_FAILED: ReasonDoc(
        _J, "the written chain differs from the source: report it with the message", _INVALID
    ),
    Reason.HUB_DOWNLOAD_FAILED: ReasonDoc(
        _J, "check the hub's reachability; the Job is retried up to its backoffLimit", _FAILURE
    ),
    Reason.SOURCE_UNAUTHORIZED: ReasonDoc(
        _J,
        "check the token or keys in the Secret spec.source names and their access to the "
        "repository or bucket",
        _INVALID,
    ),
    Reason.SOURCE_UNAVAILABLE: ReasonDoc(
        _J,
        "check that the hub or S3 endpoint is reachable from the cluster; the Job is retried "
        "up to its backoffLimit and resumes the download",
        _FAILURE,
    ),
    Reason.SOURCE_DIGEST_MISMATCH: ReasonDoc(
        _J,
        "a downloaded file differs from the source's digest: the Job is retried and downloads "
        "it again; report it to the source's owner if it persists",
        _FAILURE,
    ),
    Reason.OUTPUT_LOCKED: ReasonDoc(
        _J,
        "another split writes the same files right now: the Job is retried up to its "
        "backoffLimit; stop the other writer if it should not run",
        _FAILURE,
    ),
    Reason.SOURCE_CHANGED: ReasonDoc(
        _J,
        "something wrote or truncated the checkpoint during the split: stop it; the Job is "
        "retried and nothing of the failed component was kept",
        _FAILURE,
    ),
    Reason.INTERNAL_ERROR: ReasonDoc(
        _J, "a bug or a node problem: the Job is retried; report it if it persists", _FAILURE
    ),
    Reason.OOM_KILLED: ReasonDoc(_K, "raise spec.resources.limits.memory"),
    Reason.DEADLINE_EXCEEDED: ReasonDoc(
        _K, "raise job_active_deadline_seconds in the operator's configuration"
    ),
    Reason.JOB_FAILED: ReasonDoc(_K, "read the message (the pod's exit code and last output)"),
    Reason.RESULT_MISSING: ReasonDoc(
        _K, "the Job's image does not write a result: use the operator's own image"
    ),
    Reason.SERVING_CRASH_LOOP: ReasonDoc(
        _K,
        "the trunk server keeps exiting: read its last line in the message (a trunk file "
        "changed or corrupted on the volume: run the split again with a spec change)",
    ),
    Reason.SERVING_IMAGE_PULL_FAILED: ReasonDoc(
        _K, "check job_image and job_image_pull_secrets in the operator's configuration"
    ),
    Reason.SERVING_SECRET_NOT_FOUND: ReasonDoc(
        _K,
        "create the Secret the message names (spec.serving.tls.secretName: a kubernetes.io/tls "
        "Secret; caSecretName: one with ca.crt); the pods start once it exists",
    ),
    Reason.SERVING_FAILED: ReasonDoc(
        _K, "read the message (the Deployment's or a pod's condition); fix spec.serving"
    ),
    Reason.INVALID_SPEC: ReasonDoc(_O, "correct the field the message names"),
    Reason.INVALID_PATH: ReasonDoc(
        _O, "use a relative path inside the volume, without '..', not a system folder"
    ),
    Reason.INVALID_STORAGE: ReasonDoc(
        _O, "set spec.storage.claimName, or spec.storage.size for a claim the operator creates"
    ),
    Reason.INVALID_MODEL_ID: ReasonDoc(
        _O, "use letters, digits, '.', '_', '+', '-' in spec.modelId"
    ),
    Reason.INVALID_MODEL_TYPE: ReasonDoc(_O, "use one of the supported spec.modelType values"),
    Reason.INVALID_SPLIT_CONFIG: ReasonDoc(
        _O, "write spec.splitStorageConfig.splitConfig as 'p1-p2', e.g. '2-10'"
    ),
    Reason.SOURCE_CLAIM_NOT_FOUND: ReasonDoc(
        _O, "create the claim named in spec.source.claimName", waits=True
    ),
    Reason.STORAGE_CLAIM_NOT_FOUND: ReasonDoc(
        _O, "create the claim named in spec.storage.claimName", waits=True
    ),
    Reason.STORAGE_CLAIM_CONFLICT: ReasonDoc(
        _O, "the claim name <name>-storage is taken: set spec.storage.claimName to use it"
    ),
    Reason.CONFLICT: ReasonDoc(
        _O,
        "another SplitModel writes these files: change spec.modelId or storagePath "
        "(or delete the other one; this one then proceeds)",
        waits=True,
    ),
    Reason.CLEANUP_FAILED: ReasonDoc(
        _O, "check the storage claim; or set deletionPolicy: Retain to delete and keep files"
    ),
}


def camel(name: str) -> str:
    """`start_layer` -> `startLayer`: the spelling of every key the Job and status share."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def camel_document(value: Any) -> Any:
    """A nested document with every mapping key in camelCase."""
    if isinstance(value, dict):
        return {camel(key): camel_document(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [camel_document(item) for item in value]
    return value


@dataclass(frozen=True)
class ComponentResult:
    """One component: what the Job reports and what `status.components[]` records.

    Every field except the paths is a key of the component's metadata file. `sub_path` is
    the weight file relative to the storage claim's root: a pod's `volumeMounts[].subPath`.
    """

    name: Component
    model_class: str
    start_layer: int
    end_layer: int
    num_layers: int
    num_parameters: int
    memory_bytes: int
    saved_at: str
    dtype: str
    path: str | None = None
    metadata_path: str | None = None
    sha256: str | None = None
    sub_path: str | None = None

    PATH_FIELDS = ("path", "metadata_path", "sub_path")

    @classmethod
    def from_metadata(
        cls, metadata: dict[str, Any], path: object | None, metadata_path: object | None
    ) -> ComponentResult:
        values = {
            f.name: metadata[f.name if f.name != "name" else "component"]
            for f in fields(cls)
            if f.name not in cls.PATH_FIELDS
        }
        return cls(
            **values,
            path=str(path) if path else None,
            metadata_path=str(metadata_path) if metadata_path else None,
            sub_path=f"{metadata['component']}/{PurePath(str(path)).name}" if path else None,
        )

    def to_json(self) -> dict[str, Any]:
        """camelCase keys; a plan's paths and sha256 are `null`."""
        return {camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        integers = {"start_layer", "end_layer", "num_layers", "num_parameters", "memory_bytes"}
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = document.get(camel(f.name))
            if value is not None:
                values[f.name] = int(value) if f.name in integers else str(value)
        return cls(**values)


@dataclass(frozen=True)
class Verification:
    """`spec.verify`'s verdict; `maxAbsDiff` a string, as Kubernetes status takes no floats."""

    ok: bool
    max_abs_diff: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"ok": self.ok}
        if self.max_abs_diff is not None:
            document["maxAbsDiff"] = self.max_abs_diff
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        diff = document.get("maxAbsDiff")
        return cls(bool(document.get("ok")), str(diff) if diff is not None else None)


@dataclass(frozen=True)
class SourceFile:
    """One file fetched from a hub or S3 source, as verified against the source's digest."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SourceRevision:
    """Which version of a hub or S3 source was split: `status.source`."""

    revision: str  # the hub's commit sha, or the digest of the S3 objects' ETags
    files: tuple[SourceFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        files = tuple(
            SourceFile(str(f["path"]), int(f["size"]), str(f["sha256"]))
            for f in document.get("files") or ()
        )
        return cls(str(document["revision"]), files)


@dataclass(frozen=True)
class SplitResult:
    """What a split produced; its compact JSON is the Job's termination message."""

    model_name: str
    model_type: str
    split_config: str
    storage_path: str
    format: str
    saved: bool
    num_layers: int
    components: tuple[ComponentResult, ...] = ()
    verification: Verification | None = None
    source: SourceRevision | None = None  # for hub and S3 sources
    reused: bool = False  # the files of this very source revision were there already

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            camel(f.name): getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("components", "verification", "source")
        }
        document["components"] = [c.to_json() for c in self.components]
        if self.verification is not None:
            document["verification"] = self.verification.to_json()
        if self.source is not None:
            document["source"] = self.source.to_json()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self:
        """Read a result document; `KeyError`/`TypeError`/`ValueError` if it is not one."""
        verification, source = document.get("verification"), document.get("source")
        return cls(
            model_name=str(document["modelName"]),
            model_type=str(document["modelType"]),
            split_config=str(document["splitConfig"]),
            storage_path=str(document["storagePath"]),
            format=str(document["format"]),
            saved=bool(document["saved"]),
            num_layers=int(document["numLayers"]),
            components=tuple(ComponentResult.from_json(c) for c in document["components"]),
            verification=Verification.from_json(verification) if verification else None,
            source=SourceRevision.from_json(source) if source else None,
            reused=bool(document.get("reused", False)),
        )


@dataclass(frozen=True)
class ErrorDocument:
    """A failed run: `{"error": {"reason", "message"}}`, with a reason from `Reason`."""

    reason: Reason
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"error": {"reason": str(self.reason), "message": self.message}}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Self | None:
        """The error in a document, or None; an unknown reason reads as `JobFailed`."""
        error = document.get("error")
        if not isinstance(error, dict):
            return None
        message = str(error.get("message", ""))
        try:
            return cls(Reason(str(error.get("reason"))), message)
        except ValueError:
            return cls(Reason.JOB_FAILED, f"{error.get('reason')}: {message}")


#: Every field name a component carries in the result document and in status.
COMPONENT_KEYS = tuple(camel(f.name) for f in fields(ComponentResult))
