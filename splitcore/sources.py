"""Fetch what a split needs from a Hugging Face hub repository or from S3 into a cache folder.

Only what a split reads is fetched from one folder: `config.json`, the safetensors index and
the `*.safetensors` files it names (all of them without an index); never pickles, never code.
Each source and revision gets its own folder under the cache (`hub/{owner}--{name}/{commit}/`,
`s3/{bucket}/{prefix}/{etags digest}/`, holding the files at their paths under the repository
or prefix), so a moving branch or a rewritten prefix never mixes the files of two versions. A
download continues the `.{name}.part` file an interrupted one left; every file is checked
against the size and digest its source gives (the hub's LFS sha256 or git blob id; S3's
ChecksumSHA256, else a single-part upload's ETag md5) before it is renamed to its final name.

Failures carry a `Reason`: 401/403 `SourceUnauthorized`, 404 `SourceNotFound`, network
trouble retried with backoff and then `SourceUnavailable`. Tokens and keys come from the
environment (`HF_TOKEN`; `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from arguments,
and never appear in a message.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

from splitcore.atomic import fsync_directory, hidden_name, output_lock
from splitcore.checkpoint import SAFETENSORS_INDEX, CheckpointError
from splitcore.inputs import InputError, load_json
from splitcore.progress import size as shown_size
from splitcore.result import ExitCode, Reason, SourceFile, SourceRevision

T = TypeVar("T")

CONFIG = "config.json"
HUB_TOKEN_ENV = "HF_TOKEN"
S3_SECRET_ENV = "AWS_SECRET_ACCESS_KEY"
PART_SUFFIX = ".part"
CHUNK_BYTES = 8 * 1024 * 1024
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_URL_QUERY = re.compile(r"(https?://[^\s?]+)\?\S*")


def is_needed(name: str) -> bool:
    """Whether a split reads a file of this name (never a pickle, never code)."""
    return name in (CONFIG, SAFETENSORS_INDEX) or name.endswith(".safetensors")


class SourceError(Exception):
    """A fetch failed for `reason`; the message names the source, never a secret."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    """A fetched checkpoint: where it lies, which version it is, and its verified files."""

    directory: Path  # the checkpoint folder `splitcore split --model` takes
    revision: str  # the hub's commit sha, or `etags_digest` of the S3 objects
    files: tuple[SourceFile, ...]

    @property
    def source_revision(self) -> SourceRevision:
        """What `status.source` records of this fetch."""
        return SourceRevision(self.revision, self.files)

    def to_json(self) -> dict[str, Any]:
        """`status.source`'s `revision` and `files`, plus the local directory."""
        return {"directory": str(self.directory), **self.source_revision.to_json()}


@dataclass(frozen=True)
class Retry:
    """How transient failures are retried: `attempts` in all, the delay doubling each time."""

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.first_delay * 2.0 ** (attempt - 1), self.max_delay)


def clean_relative_path(text: str, what: str) -> str:
    """A folder inside a repository or prefix, '' for its root: relative, without '..'."""
    if "\\" in text or "\0" in text or text.startswith("/"):
        raise InputError(f"{what} {text!r} must be a relative path with '/' separators")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{what} {text!r} must not contain '..'")
    return "/".join(parts)


@dataclass(frozen=True)
class RemoteFile:
    """One file as its source describes it: what the downloaded bytes must match."""

    path: str  # in the source; also where it lies under the cache folder
    size: int
    sha256: str | None = None
    git_sha1: str | None = None  # the hub's blob id of a file kept in git rather than LFS
    md5: str | None = None  # the ETag of an S3 single-part upload
    etag: str | None = None  # S3: the version listed, required of every read (If-Match)


class _Digests:
    """A local file's size and the digests its `RemoteFile` names, in one read."""

    def __init__(self, path: Path, remote: RemoteFile) -> None:
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
        self.size = 0
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                self.size += len(chunk)
                sha256.update(chunk)
                if remote.md5:
                    md5.update(chunk)
                if remote.git_sha1:
                    git.update(chunk)
        self.sha256 = sha256.hexdigest()
        self._actual = {"md5 (ETag)": md5.hexdigest(), "git blob id": git.hexdigest()}

    def mismatch(self, remote: RemoteFile) -> str | None:
        """What differs from the source's description, or None."""
        checks = [
            ("size", str(remote.size), str(self.size)),
            ("sha256", remote.sha256, self.sha256),
            ("git blob id", remote.git_sha1, self._actual["git blob id"]),
            ("md5 (ETag)", remote.md5, self._actual["md5 (ETag)"]),
        ]
        for name, expected, actual in checks:
            if expected is not None and expected != actual:
                return f"{name} {actual} where the source says {expected}"
        return None


class TransferProgress:
    """One download's progress on stderr: a start line, then a line every `interval` s.

    It has the part of tqdm's interface that huggingface_hub's `http_get` drives.
    """

    def __init__(self, name: str, total: int, log: IO[str], interval: float) -> None:
        self.name, self.total, self.log, self.interval = name, total, log, interval
        self.done = 0
        self._last = 0.0

    def start(self, done: int) -> None:
        self.done, self._last = done, time.monotonic()
        resuming = f", resuming at {shown_size(done)}" if done else ""
        self._print(f"  fetching {self.name}: {shown_size(self.total)}{resuming}")

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval and self.done < self.total:
            self._last = now
            self._print(f"  {self.name}: {shown_size(self.done)} of {shown_size(self.total)}")

    def _print(self, line: str) -> None:
        print(line, file=self.log, flush=True)

    def __enter__(self) -> TransferProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


Download = Callable[[RemoteFile, BinaryIO, TransferProgress], None]


@dataclass
class _Session:
    """One fetch: how its source's errors read, how they are retried, where lines go."""

    where: str
    classify: Callable[[Exception, str], SourceError | None]  # None: not a source's error
    transient: Callable[[Exception], bool]
    retry: Retry
    log: IO[str]
    interval: float
    secrets: tuple[str, ...] = ()

    def describe(self, error: BaseException) -> str:
        """An error as one line; no secret, no URL's query string (a signed URL's key)."""
        text = _URL_QUERY.sub(r"\1?…", " ".join(str(error).split()) or type(error).__name__)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def say(self, line: str) -> None:
        print(line, file=self.log, flush=True)

    def attempt(self, what: str, action: Callable[[], T]) -> T:
        """`action()`, retried while it fails transiently; a source's failure as `SourceError`."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return action()
            except SourceError:
                raise
            except Exception as error:
                if not self.transient(error):
                    failure = self.classify(error, what)
                    if failure is None:
                        raise
                    raise SourceError(failure.reason, self.describe(failure)) from None
                if attempt == self.retry.attempts:
                    raise SourceError(
                        Reason.SOURCE_UNAVAILABLE,
                        f"{what} failed {attempt} times, last: {self.describe(error)}",
                    ) from None
                delay = self.retry.delay(attempt)
                self.say(
                    f"  {what}: {self.describe(error)}; "
                    f"retry {attempt}/{self.retry.attempts - 1} in {delay:g} s"
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch_all(
        self, folder: Path, remotes: Iterable[RemoteFile], download: Download
    ) -> tuple[SourceFile, ...]:
        """Config, index, then the weights the index names (all, without an index) into
        `folder`, one writer at a time (a second fails with OutputLocked)."""
        folder.mkdir(parents=True, exist_ok=True)
        remotes = list(remotes)
        with output_lock(folder, "fetch"):
            files = [self.fetch_one(folder, r, download) for r in remotes if not _is_weights(r)]
            files += [
                self.fetch_one(folder, remote, download)
                for remote in _indexed_weights(folder, remotes, self.where)
            ]
        return tuple(sorted(files, key=lambda f: f.path))

    def fetch_one(self, folder: Path, remote: RemoteFile, download: Download) -> SourceFile:
        """One file: kept if a verified copy is there, else downloaded (resumed), verified,
        and renamed into place."""
        final = folder / remote.path
        if final.is_file():
            cached = _Digests(final, remote)
            if cached.mismatch(remote) is None:
                self.say(f"  {remote.path}: cached, verified")
                return SourceFile(remote.path, cached.size, cached.sha256)
            self.say(f"  {remote.path}: the cached copy differs from the source, fetching again")
            final.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(hidden_name(final.name, PART_SUFFIX))
        progress = TransferProgress(remote.path, remote.size, self.log, self.interval)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "r+b") as stream:
            if stream.seek(0, os.SEEK_END) > remote.size:
                stream.truncate(0)
            progress.start(stream.seek(0, os.SEEK_END))

            def resume() -> None:
                progress.done = stream.seek(0, os.SEEK_END)  # what earlier attempts wrote
                try:
                    download(remote, stream, progress)
                finally:
                    stream.flush()

            self.attempt(f"downloading {remote.path}", resume)
            os.fsync(stream.fileno())
        downloaded = _Digests(part, remote)
        if problem := downloaded.mismatch(remote):
            part.unlink()
            raise SourceError(
                Reason.SOURCE_DIGEST_MISMATCH,
                f"{remote.path} from {self.where} has {problem}; the download was removed",
            )
        part.replace(final)
        fsync_directory(final.parent)
        self.say(f"  fetched {remote.path}: sha256 {downloaded.sha256}")
        return SourceFile(remote.path, downloaded.size, downloaded.sha256)


def _is_local(error: Exception) -> bool:
    """A failure of this machine (a full disk, a read-only folder), not of the network: the
    client libraries wrap socket errors, so an OSError with an errno is the cache's."""
    return isinstance(error, OSError) and error.errno is not None


def _is_weights(remote: RemoteFile) -> bool:
    return remote.path.endswith(".safetensors")


def _indexed_weights(folder: Path, remotes: list[RemoteFile], where: str) -> list[RemoteFile]:
    """The weight files a split reads: those the (fetched) index names, else all of them.

    Some repositories keep a consolidated copy beside the shards; it is never fetched.
    """
    weights = [remote for remote in remotes if _is_weights(remote)]
    index = next((r for r in remotes if PurePosixPath(r.path).name == SAFETENSORS_INDEX), None)
    if index is None:
        return weights
    document = load_json(folder / index.path, CheckpointError)
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index.path} from {where} has no weight_map object")
    named = {str(name) for name in weight_map.values()}
    missing = named - {PurePosixPath(remote.path).name for remote in weights}
    if missing:
        raise SourceError(
            Reason.SOURCE_NOT_FOUND,
            f"{index.path} names {', '.join(sorted(missing)[:3])}, not in {where}",
        )
    return [remote for remote in weights if PurePosixPath(remote.path).name in named]


def _require_checkpoint(paths: Iterable[str], where: str) -> None:
    names = {PurePosixPath(path).name for path in paths}
    if CONFIG not in names:
        raise SourceError(Reason.SOURCE_NOT_FOUND, f"no {CONFIG} in {where}")
    if not any(name.endswith(".safetensors") for name in names):
        raise SourceError(
            Reason.SOURCE_NOT_FOUND,
            f"no *.safetensors in {where} (pickled weights and code are never fetched)",
        )


def _needed_in(path: str, folder: str) -> bool:
    """Whether `path` is a file a split needs directly in `folder` ('' for the root)."""
    parent, _, name = path.rpartition("/")
    return parent == folder and is_needed(name)


# --- Hugging Face hub ---------------------------------------------------------------------


def _hub_transient(error: Exception) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled) or _is_local(error):
        return False
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status in (408, 429) or status >= 500
    # Connection trouble, or a body cut short (`http_get`'s size check raises OSError).
    return isinstance(error, httpx2.TransportError | OSError)


def _hub_failure(error: Exception, what: str) -> SourceError | None:
    """The `SourceError` a hub client's error stands for; None if it is not one."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, OfflineModeIsEnabled):
        return SourceError(Reason.SOURCE_UNAVAILABLE, f"{what}: HF_HUB_OFFLINE is set")
    if isinstance(error, GatedRepoError):
        return SourceError(
            Reason.SOURCE_UNAUTHORIZED, f"{what}: a gated repository the token may not read"
        )
    if isinstance(error, RepositoryNotFoundError):
        return SourceError(
            Reason.SOURCE_NOT_FOUND,
            f"{what}: no such repository (or a private one the token may not read)",
        )
    if isinstance(error, RevisionNotFoundError):
        return SourceError(Reason.SOURCE_NOT_FOUND, f"{what}: no such revision")
    if isinstance(error, RemoteEntryNotFoundError):
        return SourceError(Reason.SOURCE_NOT_FOUND, f"{what}: no such file")
    if not isinstance(error, HfHubHTTPError) or error.response is None:
        return None
    status = error.response.status_code
    if status in (401, 403):
        return SourceError(Reason.SOURCE_UNAUTHORIZED, f"{what}: HTTP {status}, access refused")
    if status == 404:
        return SourceError(Reason.SOURCE_NOT_FOUND, f"{what}: HTTP 404")
    return SourceError(Reason.SOURCE_UNAVAILABLE, f"{what}: {error}")


def fetch_hub(
    repo_id: str,
    cache_dir: str | Path,
    *,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | None = None,
    model_path: str = "",
    retry: Retry = Retry(),
    log: IO[str] | None = None,
    interval: float = 10.0,
) -> Fetched:
    """Fetch a folder of a hub repository at `revision`, resolved to its commit sha.

    `endpoint` defaults to `HF_ENDPOINT` or the public hub; `token` to the client's own
    (`HF_TOKEN` or a stored login).
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils._headers import build_hf_headers

    folder_path = clean_relative_path(model_path, "the model path")
    where = f"{repo_id}@{revision}" + (f":{folder_path}" if folder_path else "")
    session = _Session(
        where, _hub_failure, _hub_transient, retry, log or sys.stderr, interval,
        secrets=(token,) if token else (),
    )  # fmt: skip
    api = HfApi(endpoint=endpoint, token=token)
    info = session.attempt(
        f"reading {where}",
        lambda: api.model_info(repo_id, revision=revision, files_metadata=True),
    )
    commit = str(info.sha or "")
    if not _COMMIT_SHA.match(commit):
        raise SourceError(Reason.SOURCE_UNAVAILABLE, f"{where}: the hub gave no commit sha")
    remotes = [
        RemoteFile(
            path=sibling.rfilename,
            size=int(sibling.lfs.size if sibling.lfs else sibling.size or 0),
            sha256=sibling.lfs.sha256 if sibling.lfs else None,
            git_sha1=None if sibling.lfs else sibling.blob_id,
        )
        for sibling in info.siblings or ()
        if _needed_in(sibling.rfilename, folder_path)
    ]
    _require_checkpoint((remote.path for remote in remotes), where)
    session.say(f"fetch {where}: commit {commit}, {len(remotes)} files")

    def download(remote: RemoteFile, stream: BinaryIO, progress: TransferProgress) -> None:
        url = hf_hub_url(repo_id, remote.path, revision=commit, endpoint=endpoint)
        metadata = get_hf_file_metadata(url, token=token, endpoint=endpoint)
        headers = build_hf_headers(token=token)
        if urlsplit(metadata.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a CDN's signed URL: the token stays home
        http_get(
            metadata.location,
            stream,
            resume_size=progress.done,
            headers=headers,
            expected_size=remote.size,
            displayed_filename=remote.path,
            tqdm_class=cast(Any, lambda **_: progress),
        )

    folder = Path(cache_dir) / "hub" / repo_id.replace("/", "--") / commit
    files = session.fetch_all(folder, remotes, download)
    return Fetched(folder / folder_path, commit, files)


# --- S3 -----------------------------------------------------------------------------------

_S3_UNAUTHORIZED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
_S3_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound"}
_S3_TRANSIENT = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at its ends)."""
    scheme, _, rest = uri.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise InputError(f"{uri!r} is not an S3 URI: write s3://bucket/prefix")
    return bucket, clean_relative_path(prefix, "the S3 prefix")


def _s3_status(error: Exception) -> tuple[str, int]:
    response: dict[str, Any] = getattr(error, "response", {})
    code = str(response.get("Error", {}).get("Code", ""))
    return code, int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _s3_transient(error: Exception) -> bool:
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(error, ClientError):
        code, status = _s3_status(error)
        return status in (408, 429) or status >= 500 or code in _S3_TRANSIENT
    if isinstance(error, NoCredentialsError | PartialCredentialsError) or _is_local(error):
        return False
    # Refused or timed-out connections, a body cut short.
    return isinstance(error, BotoCoreError | OSError)


def _s3_failure(error: Exception, what: str) -> SourceError | None:
    """The `SourceError` a boto3 error stands for; None if it is not one."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return SourceError(
            Reason.SOURCE_UNAUTHORIZED,
            f"{what}: no S3 credentials (set AWS_ACCESS_KEY_ID and {S3_SECRET_ENV})",
        )
    if not isinstance(error, ClientError):
        return None
    code, status = _s3_status(error)
    if status in (401, 403) or code in _S3_UNAUTHORIZED:
        return SourceError(Reason.SOURCE_UNAUTHORIZED, f"{what}: {code or status}, access refused")
    if status == 404 or code in _S3_NOT_FOUND:
        return SourceError(Reason.SOURCE_NOT_FOUND, f"{what}: {code or 'HTTP 404'}")
    return SourceError(Reason.SOURCE_UNAVAILABLE, f"{what}: {error}")


def _s3_expected(head: dict[str, Any], path: str, etag: str) -> RemoteFile:
    """What a downloaded object must match: its size, and a digest where S3 gives one."""
    checksum = str(head.get("ChecksumSHA256") or "")
    whole_object = head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT" and "-" not in checksum
    sha256 = base64.b64decode(checksum).hex() if checksum and whole_object else None
    # An ETag is the md5 of the bytes only for a single-part upload not encrypted with KMS
    # or a customer's key.
    etag_is_md5 = (
        _MD5_ETAG.match(etag) is not None
        and not str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
        and not head.get("SSECustomerAlgorithm")
    )
    return RemoteFile(
        path=path,
        size=int(head["ContentLength"]),
        sha256=sha256,
        md5=etag if etag_is_md5 and sha256 is None else None,
        etag=etag,
    )


def etags_digest(etags: dict[str, str]) -> str:
    """The revision of a set of S3 objects: a sha256 of their names and ETags."""
    lines = "".join(f"{name}\t{etag}\n" for name, etag in sorted(etags.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def fetch_s3(
    uri: str,
    cache_dir: str | Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    model_path: str = "",
    retry: Retry = Retry(),
    log: IO[str] | None = None,
    interval: float = 10.0,
) -> Fetched:
    """Fetch a folder under an S3 prefix, with boto3's credentials (`AWS_ACCESS_KEY_ID` and
    `AWS_SECRET_ACCESS_KEY`, or whatever else its chain finds)."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    bucket, prefix = parse_s3_uri(uri)
    folder_path = clean_relative_path(model_path, "the model path")
    where = f"s3://{bucket}/" + "/".join(p for p in (prefix, folder_path) if p)
    secret = os.environ.get(S3_SECRET_ENV)
    session = _Session(
        where, _s3_failure, _s3_transient, retry, log or sys.stderr, interval,
        secrets=(secret,) if secret else (),
    )  # fmt: skip
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            retries={"total_max_attempts": 1},  # `retry` is the one place that retries
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )

    def key(path: str) -> str:
        """The key of a path relative to the prefix."""
        return f"{prefix}/{path}" if prefix else path

    def listing() -> dict[str, str]:
        """The needed objects directly in the model path: path -> ETag."""
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key(f"{folder_path}/" if folder_path else ""), Delimiter="/"
        )
        paths = (
            (str(item["Key"])[len(key("")) :], str(item["ETag"]).strip('"'))
            for page in pages
            for item in page.get("Contents", ())
        )
        return {path: etag for path, etag in paths if _needed_in(path, folder_path)}

    etags = session.attempt(f"listing {where}", listing)
    _require_checkpoint(etags, where)
    revision = etags_digest(etags)
    session.say(f"fetch {where}: revision {revision}, {len(etags)} files")

    def head(path: str, etag: str) -> dict[str, Any]:
        return dict(
            client.head_object(
                Bucket=bucket, Key=key(path), IfMatch=f'"{etag}"', ChecksumMode="ENABLED"
            )
        )

    remotes = [
        _s3_expected(session.attempt(f"reading {path}", partial(head, path, etag)), path, etag)
        for path, etag in sorted(etags.items())
    ]

    def download(remote: RemoteFile, stream: BinaryIO, progress: TransferProgress) -> None:
        if progress.done >= remote.size:
            return
        response = client.get_object(
            Bucket=bucket,
            Key=key(remote.path),
            Range=f"bytes={progress.done}-",
            IfMatch=f'"{remote.etag}"',
        )
        if progress.done and "ContentRange" not in response:  # the range was ignored
            stream.truncate(0)
            stream.seek(0)
            progress.done = 0
        for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
            stream.write(chunk)
            progress.update(len(chunk))

    folder = Path(cache_dir) / "s3" / bucket / prefix / revision
    return Fetched(folder / folder_path, revision, session.fetch_all(folder, remotes, download))


# --- command line -------------------------------------------------------------------------


def add_source_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--hub REPO_ID | --s3 URI` and their options."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument(
        "--hub",
        metavar="REPO_ID",
        help=f"a Hugging Face hub repository, e.g. openai-community/gpt2 (token: ${HUB_TOKEN_ENV})",
    )
    source.add_argument(
        "--s3",
        metavar="URI",
        help=f"an S3 prefix, e.g. s3://models/gpt2 (keys: $AWS_ACCESS_KEY_ID, ${S3_SECRET_ENV})",
    )
    parser.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="hub endpoint, e.g. a mirror (default: $HF_ENDPOINT or https://huggingface.co)",
    )
    parser.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS's)")
    parser.add_argument("--region", help="S3 region (default: $AWS_DEFAULT_REGION)")
    parser.add_argument(
        "--model-path",
        default="",
        metavar="PATH",
        help="folder inside the repository or prefix (default: its root)",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """`splitcore fetch`'s arguments; its handler is `run`."""
    add_source_arguments(parser)
    parser.add_argument(
        "--cache", default="./cache", metavar="DIR", help="cache folder (default: ./cache)"
    )
    parser.add_argument(
        "--result-file", metavar="FILE", help="write the compact JSON result here, not to stdout"
    )
    parser.set_defaults(handler=run)


def fetch_from_args(
    args: argparse.Namespace, cache_dir: str | Path, retry: Retry = Retry()
) -> Fetched:
    """Fetch the source `add_source_arguments` parsed; another source's options are refused."""
    if args.hub:
        _refuse(args, "--hub", endpoint_url="--endpoint-url", region="--region")
        return fetch_hub(
            args.hub,
            cache_dir,
            revision=args.revision or "main",
            endpoint=args.endpoint,
            token=os.environ.get(HUB_TOKEN_ENV) or None,
            model_path=args.model_path,
            retry=retry,
        )
    _refuse(args, "--s3", revision="--revision", endpoint="--endpoint")
    return fetch_s3(
        args.s3,
        cache_dir,
        endpoint_url=args.endpoint_url,
        region=args.region,
        model_path=args.model_path,
        retry=retry,
    )


def _refuse(args: argparse.Namespace, source: str, **options: str) -> None:
    given = [flag for name, flag in options.items() if getattr(args, name)]
    if given:
        raise InputError(f"{', '.join(given)} cannot go with {source}")


def run(args: argparse.Namespace) -> int:
    """`splitcore fetch`: the source into the cache; the result is `Fetched.to_json()`."""
    from splitcore.cli import _write_result

    fetched = fetch_from_args(args, args.cache)
    print(f"fetched into {fetched.directory}", file=sys.stderr, flush=True)
    _write_result(args.result_file, fetched.to_json())
    return ExitCode.OK
