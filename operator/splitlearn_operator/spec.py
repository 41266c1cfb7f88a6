"""A `SplitModel`'s spec, validated and resolved against the operator's defaults.

The CRD's schema and CEL rules already refuse most bad input at admission; this module checks
again (a cluster may run an older CRD) and checks what a schema cannot: paths that would escape
their volume, names that would escape the storage folder. Everything here is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

from splitcore.checkpoint import HUB_ID
from splitcore.models import SUPPORTED_MODEL_TYPES as MODEL_TYPES
from splitcore.points import SplitPointError, SplitPoints
from splitcore.result import Reason
from splitcore.storage import validate_model_name
from splitcore.weights import FORMATS
from splitlearn_operator.config import SOURCE_MOUNT, OperatorConfig
from splitlearn_operator.sources import HubSource, S3Source, SecretKey

DELETION_POLICIES = ("Retain", "Delete")
DEFAULT_SERVING_PORT = 50051
#: Ports the trunk server's pod uses besides spec.serving.port: metrics and plaintext health.
SERVING_METRICS_PORT, SERVING_HEALTH_PORT = 8000, 8081
#: `<name>-trunk` names a Service: a DNS label (a letter first, 63 characters at most).
_SERVED_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,55}[a-z0-9])?$")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?|mps)$")
# Mount points the Job's pod already uses, and system folders: never the storage folder.
_RESERVED_MOUNTS = (
    "/",
    "/bin",
    "/cache",
    "/dev",
    "/etc",
    "/lib",
    "/proc",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    SOURCE_MOUNT,
)


class SpecError(ValueError):
    """The spec cannot be acted on; `reason` becomes the Stalled condition's reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StorageClaim:
    """The claim components are written to: an existing one, or one the operator creates."""

    name: str
    create: bool = False
    size: str | None = None
    storage_class: str | None = None
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)


@dataclass(frozen=True)
class ServingSpec:
    """`spec.serving` when enabled: the trunk server's Deployment and Service."""

    replicas: int = 1
    port: int = DEFAULT_SERVING_PORT
    trainable: bool = False  # the server may step and save the trunk (storage mounted rw)
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    session_timeout_seconds: int | None = None  # the server's own default when None
    tls_secret: str | None = None  # a kubernetes.io/tls Secret, mounted (never read)
    client_ca_secret: str | None = None  # its ca.crt: clients must present a certificate


@dataclass(frozen=True)
class ResolvedSpec:
    """What a Job needs, with every default applied. Its hash names the Job."""

    model_id: str
    model_path: str  # under /source for a claim; a folder inside the repository or prefix
    model_type: str
    split_config: str  # canonical: str(SplitPoints)
    storage_path: str
    auto_save: bool
    storage: StorageClaim | None  # None when nothing is saved (autoSave false)
    source_claim: str | None
    hub: HubSource | None
    s3: S3Source | None
    cache_claim: str | None  # the download cache of a hub or s3 source, if not the storage claim
    device: str
    file_format: str
    verify: bool
    allow_pickle: bool
    deletion_policy: str
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    serving: ServingSpec | None = None  # None: not served

    @cached_property  # read several times per reconcile; the spec is frozen
    def spec_hash(self) -> str:
        """Ten hex digits of the sha256 of everything that changes the Job's work."""
        document = asdict(self)
        document.pop("deletion_policy")  # deleting later does not change the split
        document.pop("serving")  # serving follows the split's result, it does not redo it
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:10]

    def component_paths(self) -> list[str]:
        """Every file this spec writes, as paths on the storage volume's mount."""
        paths = []
        for component in ("bottom", "trunk", "top"):
            stem = (
                f"{self.storage_path}/{component}/{self.model_id}_{self.split_config}_{component}"
            )
            paths += [f"{stem}.{self.file_format}", f"{stem}_metadata.json"]
        return paths


def _mapping(spec: Any, key: str, where: str | None = None) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(Reason.INVALID_SPEC, f"{where or 'spec.' + key} must be an object")
    return value


def _inside_volume(path: str, field_name: str) -> str:
    """A path inside a volume: relative, normalised, never climbing out with `..`."""
    if not path:
        raise SpecError(Reason.INVALID_PATH, f"{field_name} must not be empty")
    if "\0" in path:
        raise SpecError(Reason.INVALID_PATH, f"{field_name} must not contain a NUL byte")
    parts = PurePosixPath(path).parts
    if ".." in parts:
        raise SpecError(Reason.INVALID_PATH, f"{field_name} {path!r} must not contain '..'")
    relative = [part for part in parts if part != "/"]  # PurePosixPath drops "." parts
    if not relative:
        raise SpecError(Reason.INVALID_PATH, f"{field_name} {path!r} names the volume's root")
    return "/".join(relative)


def _storage_path(path: str) -> str:
    """The mount path of the storage volume in the Job: absolute, normalised, not reserved."""
    if not path.startswith("/"):
        path = "/" + path  # "./models" -> "/./models" -> /models
    relative = _inside_volume(path, "spec.splitStorageConfig.storagePath")
    mount = "/" + relative
    if any(
        mount == reserved or (reserved != "/" and mount.startswith(reserved + "/"))
        for reserved in _RESERVED_MOUNTS
    ):
        raise SpecError(
            Reason.INVALID_PATH,
            f"spec.splitStorageConfig.storagePath {path!r} is a reserved or system path; "
            "use a folder such as /models",
        )
    return mount


def _storage_claim(spec: dict[str, Any], name: str) -> StorageClaim:
    storage = _mapping(spec, "storage")
    claim = storage.get("claimName")
    size = storage.get("size")
    if claim and size:
        raise SpecError(Reason.INVALID_STORAGE, "spec.storage: set claimName or size, not both")
    if claim:
        return StorageClaim(name=str(claim))
    if not size:
        raise SpecError(
            Reason.INVALID_STORAGE,
            "spec.storage needs claimName (an existing PersistentVolumeClaim) or size "
            "(for a claim the operator creates)",
        )
    if not _QUANTITY.match(str(size)):
        raise SpecError(Reason.INVALID_STORAGE, f"spec.storage.size {size!r} is not a quantity")
    modes = tuple(storage.get("accessModes") or ("ReadWriteOnce",))
    if not set(modes) <= set(ACCESS_MODES):
        raise SpecError(
            Reason.INVALID_STORAGE, f"spec.storage.accessModes {list(modes)} not supported"
        )
    return StorageClaim(
        name=f"{name}-storage"[:63],
        create=True,
        size=str(size),
        storage_class=storage.get("storageClassName"),
        access_modes=modes,
    )


def _hub_source(source: dict[str, Any]) -> HubSource | None:
    hub = _mapping(source, "hub", "spec.source.hub")
    if not hub:
        return None
    repo_id = str(hub.get("repoId") or "")
    if not HUB_ID.match(repo_id) or ".." in repo_id:
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.source.hub.repoId {repo_id!r} is not organisation/name"
        )
    token = _mapping(hub, "tokenSecretRef", "spec.source.hub.tokenSecretRef")
    return HubSource(
        repo_id=repo_id,
        revision=hub.get("revision") or None,
        endpoint=hub.get("endpoint") or None,
        token=SecretKey(str(token["name"]), str(token["key"])) if token else None,
    )


def _s3_source(source: dict[str, Any]) -> S3Source | None:
    s3 = _mapping(source, "s3", "spec.source.s3")
    if not s3:
        return None
    uri = str(s3.get("uri") or "")
    if not _S3_URI.match(uri) or ".." in uri.split("/"):
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.source.s3.uri {uri!r} is not s3://bucket/prefix"
        )
    credentials = _mapping(s3, "credentialsSecretRef", "spec.source.s3.credentialsSecretRef")
    return S3Source(
        uri=uri,
        endpoint_url=s3.get("endpointURL") or None,
        region=s3.get("region") or None,
        credentials=str(credentials["name"]) if credentials else None,
    )


def _model(spec: dict[str, Any], name: str) -> tuple[str, str]:
    """`modelId` (default: the resource's name) and `modelType`, checked."""
    model_id = str(spec.get("modelId") or name)
    try:
        validate_model_name(model_id)
    except ValueError as error:
        raise SpecError(Reason.INVALID_MODEL_ID, f"spec.modelId: {error}") from None
    model_type = spec.get("modelType", "auto")
    if model_type not in MODEL_TYPES:
        raise SpecError(
            Reason.INVALID_MODEL_TYPE,
            f"spec.modelType {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}",
        )
    return model_id, str(model_type)


@dataclass(frozen=True)
class _Source:
    claim: str | None
    hub: HubSource | None
    s3: S3Source | None
    model_path: str
    cache_claim: str | None


def _source(spec: dict[str, Any], auto_save: bool) -> _Source:
    """Exactly one of a claim, a hub repository or an S3 prefix, and the folder in it."""
    source = _mapping(spec, "source")
    if sum(bool(source.get(kind)) for kind in ("claimName", "hub", "s3")) > 1:
        raise SpecError(Reason.INVALID_SPEC, "spec.source holds exactly one of claimName, hub, s3")
    claim = source.get("claimName") or None
    hub, s3 = _hub_source(source), _s3_source(source)
    model_path = str(spec.get("modelPath") or "")
    if claim:
        model_path = f"{SOURCE_MOUNT}/{_inside_volume(model_path, 'spec.modelPath')}"
    elif hub is None and s3 is None:  # a bare hub id, as before spec.source.hub existed
        if not HUB_ID.match(model_path) or ".." in model_path:
            raise SpecError(
                Reason.INVALID_PATH,
                f"spec.modelPath {model_path!r} is not a hub id (organisation/name); to read a "
                "checkpoint from a volume, set spec.source.claimName and a path inside it",
            )
        hub, model_path = HubSource(repo_id=model_path), ""
    elif model_path:
        model_path = _inside_volume(model_path, "spec.modelPath")
    cache_claim = source.get("cacheClaimName") or None
    if (hub or s3) and not auto_save and cache_claim:
        raise SpecError(Reason.INVALID_SPEC, "spec.source.cacheClaimName needs autoSave")
    return _Source(claim, hub, s3, model_path, cache_claim)


def _job_options(spec: dict[str, Any], auto_save: bool) -> tuple[str, str, str, bool]:
    """`format`, `device`, `deletionPolicy` and `verify`, checked."""
    file_format = spec.get("format", "pt")
    if file_format not in FORMATS:
        raise SpecError(Reason.INVALID_SPEC, f"spec.format must be one of {', '.join(FORMATS)}")
    device = str(spec.get("device", "cpu"))
    if not _DEVICE.match(device):
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.device {device!r}: use cpu, cuda, cuda:N or mps"
        )
    deletion_policy = spec.get("deletionPolicy", "Retain")
    if deletion_policy not in DELETION_POLICIES:
        raise SpecError(Reason.INVALID_SPEC, "spec.deletionPolicy must be Retain or Delete")
    verify = bool(spec.get("verify", False))
    if verify and not auto_save:
        raise SpecError(Reason.INVALID_SPEC, "spec.verify checks written files: it needs autoSave")
    return str(file_format), device, str(deletion_policy), verify


def _serving(
    spec: dict[str, Any], name: str, auto_save: bool, config: OperatorConfig
) -> ServingSpec | None:
    """`spec.serving`, checked; None unless enabled."""
    serving = _mapping(spec, "serving")
    if not serving.get("enabled", False):
        return None
    if not auto_save:
        raise SpecError(Reason.INVALID_SPEC, "spec.serving needs autoSave: true (files to serve)")
    if not _SERVED_NAME.match(name):
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.serving: the Service {name}-trunk needs a name of at most 57 lowercase "
            "letters, digits and '-', starting with a letter",
        )
    port = int(serving.get("port", DEFAULT_SERVING_PORT))
    if not 0 < port < 65536 or port in (SERVING_METRICS_PORT, SERVING_HEALTH_PORT):
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.serving.port {port}: a TCP port other than {SERVING_METRICS_PORT} "
            f"(metrics) and {SERVING_HEALTH_PORT} (health)",
        )
    replicas = int(serving.get("replicas", 1))
    if replicas < 0:
        raise SpecError(Reason.INVALID_SPEC, "spec.serving.replicas must be 0 or more")
    tls = _mapping(serving, "tls", "spec.serving.tls")
    if tls.get("caSecretName") and not tls.get("secretName"):
        raise SpecError(Reason.INVALID_SPEC, "spec.serving.tls.caSecretName needs secretName")
    timeout = serving.get("sessionTimeoutSeconds")
    return ServingSpec(
        replicas=replicas,
        port=port,
        trainable=bool(serving.get("trainable", False)),
        resources=dict(serving.get("resources") or config.extras.serving_default_resources),
        node_selector=dict(serving.get("nodeSelector") or {}),
        tolerations=list(serving.get("tolerations") or []),
        session_timeout_seconds=int(timeout) if timeout is not None else None,
        tls_secret=tls.get("secretName") or None,
        client_ca_secret=tls.get("caSecretName") or None,
    )


def resolve_spec(body: dict[str, Any], config: OperatorConfig) -> ResolvedSpec:
    """Validate a SplitModel's spec and apply the operator's defaults; raise `SpecError`."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise SpecError(Reason.INVALID_SPEC, "the SplitModel has no spec")
    name = str(body.get("metadata", {}).get("name", ""))
    model_id, model_type = _model(spec, name)
    storage_config = _mapping(spec, "splitStorageConfig")
    try:
        split = SplitPoints.parse(storage_config.get("splitConfig"))
    except SplitPointError as error:
        raise SpecError(
            Reason.INVALID_SPLIT_CONFIG, f"spec.splitStorageConfig.splitConfig: {error}"
        ) from None
    auto_save = bool(storage_config.get("autoSave", config.server.auto_save_split_models))
    storage_path = _storage_path(
        str(storage_config.get("storagePath") or config.default_storage_path)
    )
    source = _source(spec, auto_save)
    file_format, device, deletion_policy, verify = _job_options(spec, auto_save)
    return ResolvedSpec(
        model_id=model_id,
        model_path=source.model_path,
        model_type=model_type,
        split_config=str(split),
        storage_path=storage_path,
        auto_save=auto_save,
        storage=_storage_claim(spec, name) if auto_save else None,
        source_claim=source.claim,
        hub=source.hub,
        s3=source.s3,
        cache_claim=source.cache_claim,
        device=device,
        file_format=file_format,
        verify=verify,
        allow_pickle=bool(spec.get("allowPickle", False)),
        deletion_policy=deletion_policy,
        resources=dict(spec.get("resources") or config.extras.job_default_resources),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=list(spec.get("tolerations") or []),
        serving=_serving(spec, name, auto_save, config),
    )
