"""Where a Job reads its checkpoint: a hub repository or an S3 prefix (or a claim), and how
the Job is told: arguments for `splitcore split`, credentials as env vars from their Secrets
(never in arguments, status or Events), and the download cache. Pure, like the builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitlearn_operator.spec import ResolvedSpec

CACHE_MOUNT = "/source-cache"


@dataclass(frozen=True)
class SecretKey:
    """One key of a Secret, handed to the Job only as an env var (`secretKeyRef`)."""

    name: str
    key: str


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub repository (or a mirror of the hub's API)."""

    repo_id: str
    revision: str | None = None
    endpoint: str | None = None
    token: SecretKey | None = None


@dataclass(frozen=True)
class S3Source:
    """An S3-compatible prefix; `credentials` names a Secret with the AWS_* keys."""

    uri: str
    endpoint_url: str | None = None
    region: str | None = None
    credentials: str | None = None


def source_arguments(spec: ResolvedSpec) -> list[str]:
    """Where the Job reads the checkpoint: a folder under /source, or a hub or S3 source that
    `splitcore split` fetches into the cache first (credentials come as env vars, never here)."""
    if spec.hub is not None:
        hub = spec.hub
        options = [("--revision", hub.revision), ("--endpoint", hub.endpoint)]
        arguments = ["--hub", hub.repo_id]
    elif spec.s3 is not None:
        s3 = spec.s3
        options = [("--endpoint-url", s3.endpoint_url), ("--region", s3.region)]
        arguments = ["--s3", s3.uri]
    else:
        return ["--model", spec.model_path]
    arguments += [item for flag, value in options if value for item in (flag, value)]
    if spec.model_path:
        arguments += ["--model-path", spec.model_path]
    return [*arguments, "--cache", source_cache(spec)]


def source_cache(spec: ResolvedSpec) -> str:
    """The download cache: the cache claim's mount, a folder on the storage claim, or (plan
    only) a scratch folder."""
    if spec.cache_claim:
        return CACHE_MOUNT
    return f"{spec.storage_path}/.cache/sources" if spec.storage else "/tmp/sources"


def source_env(spec: ResolvedSpec) -> list[dict[str, Any]]:
    """The source's credentials, as env vars from their Secret: never in args or status."""

    def secret(env: str, name: str, key: str) -> dict[str, Any]:
        return {"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}

    if spec.hub is not None and spec.hub.token is not None:
        return [secret("HF_TOKEN", spec.hub.token.name, spec.hub.token.key)]
    if spec.s3 is not None and spec.s3.credentials:
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return [secret(key, spec.s3.credentials, key) for key in keys]
    return []
