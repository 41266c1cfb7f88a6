"""The operator's configuration: one `ServerConfig` file, read once, in one place.

Every `ServerConfig` field does something here:

* `host` / `port`: bind of the operator's HTTP endpoint (liveness probe at `/healthz`);
* `metrics_port` / `enable_monitoring`: the Prometheus endpoint (nothing listens when off);
* `max_workers`: how many SplitModels are handled at once (reconcile, delete, record);
* `max_models`: how many split Jobs may run at once; the rest wait as `Queued`;
* `health_check_interval`: how often the liveness probe really checks the API (cached between);
* `log_level`: the operator's log level;
* `model_storage_dir` / `auto_save_split_models`: defaults for `spec.splitStorageConfig`;
* `config`: the extras below (`OperatorExtras`), e.g. `{log_format: json, job_image: ...}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitcore.config import ConfigError, ServerConfig, from_mapping

GROUP = "splitlearn.io"
VERSION = "v1alpha1"
PLURAL = "splitmodels"
FINALIZER = f"{GROUP}/finalizer"
MANAGED_BY = "splitlearn-operator"

# Labels and annotations the operator puts on what it creates.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_SPLITMODEL = f"{GROUP}/splitmodel"
LABEL_SPEC_HASH = f"{GROUP}/spec-hash"
ANNOTATION_GENERATION = f"{GROUP}/generation"
# On a trunk server: the hash of the manifests last applied (nothing to write while it holds),
# and on its pods what they serve.
ANNOTATION_APPLIED = f"{GROUP}/applied"
ANNOTATION_TRUNK_SHA256 = f"{GROUP}/trunk-sha256"
ANNOTATION_SPLIT = f"{GROUP}/split"
ANNOTATION_CONFIG_SHA256 = f"{GROUP}/config-sha256"

SOURCE_MOUNT = "/source"
CONTAINER_NAME = "split"


@dataclass
class OperatorExtras:
    """Operator settings beyond the guide's fields, read from `ServerConfig.config`."""

    log_format: str = "text"  # or "json": one JSON object per line
    job_image: str = "ghcr.io/splitlearn/splitlearn-operator:0.1.0"
    job_image_pull_policy: str = "IfNotPresent"
    job_image_pull_secrets: list[str] = field(default_factory=list)  # names of Secrets
    job_service_account: str = ""  # empty: the namespace's default (its token is not mounted)
    job_backoff_limit: int = 2
    job_active_deadline_seconds: int = 6 * 3600
    job_ttl_seconds_after_finished: int = 7 * 24 * 3600
    job_run_as_user: int | None = 10001  # None: the platform assigns one (OpenShift)
    job_default_resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "16Gi"},
        }
    )
    serving_default_resources: dict[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "500m", "memory": "1Gi"}}
    )
    serving_progress_deadline_seconds: int = 600  # a rollout without progress: Stalled
    queue_retry_seconds: float = 5.0  # how soon a Queued SplitModel looks for a free slot
    wait_retry_seconds: float = 30.0  # how soon a missing claim is looked for again
    resync_seconds: float = 30.0  # how often finished Jobs are checked against the statuses
    watch_server_timeout_seconds: int = 300
    watch_client_timeout_seconds: int = 330

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"config.log_format: expected text or json, got {self.log_format!r}")
        if self.job_image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ConfigError(
                "config.job_image_pull_policy: expected Always, IfNotPresent or Never"
            )
        for name in ("job_backoff_limit", "job_active_deadline_seconds"):
            if getattr(self, name) < (0 if name == "job_backoff_limit" else 1):
                raise ConfigError(f"config.{name}: out of range: {getattr(self, name)}")


@dataclass(frozen=True)
class OperatorConfig:
    """`ServerConfig` plus its parsed extras: what the rest of the operator reads."""

    server: ServerConfig
    extras: OperatorExtras

    @classmethod
    def from_server_config(cls, server: ServerConfig) -> OperatorConfig:
        extras = from_mapping(OperatorExtras, server.config, "config")
        return cls(server, extras)

    @classmethod
    def load(cls, path: str | Path | None) -> OperatorConfig:
        """Read the config file, or the defaults when there is none."""
        return cls.from_server_config(ServerConfig.from_yaml(path) if path else ServerConfig())

    @property
    def default_storage_path(self) -> str:
        """`model_storage_dir` as a mount path in the Job: `./models` becomes `/models`."""
        path = self.server.model_storage_dir
        return path if path.startswith("/") else "/" + path.removeprefix("./").lstrip("/")
