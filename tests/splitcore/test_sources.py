"""`splitcore.sources` against real protocol servers on 127.0.0.1: the harness's hub (spoken to
by the real `huggingface_hub` client) and moto's S3 server (spoken to by boto3)."""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file

from splitcore.cli import main as cli_main
from splitcore.inputs import InputError
from splitcore.result import ExitCode, Reason, SourceFile
from splitcore.sources import (
    Fetched,
    Retry,
    SourceError,
    _hub_transient,
    _s3_transient,
    clean_relative_path,
    configure_parser,
    etags_digest,
    fetch_hub,
    fetch_s3,
    parse_s3_uri,
)
from splitcore.split import split_checkpoint
from support.hub import HubRepo, HubServer, flipped

REPO_ID = "splitlearn/tiny-gpt2"
TOKEN = "hf_test_token_1234567890"
BUCKET = "models"
PREFIX = "team/tiny"
S3_SECRET = "moto-secret-key-1234567890"
NEEDED = ("gpt2/config.json", "gpt2/model.safetensors")
FAST = Retry(attempts=3, first_delay=0.01)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def source_files(gpt2_checkpoint: Path) -> dict[str, bytes]:
    """A repository: the checkpoint under gpt2/, beside files a split never needs."""
    files = {f"gpt2/{p.name}": p.read_bytes() for p in gpt2_checkpoint.iterdir() if p.is_file()}
    assert set(NEEDED) < set(files)
    return files | {
        "config.json": b'{"model_type": "gpt2"}',  # the root's, not the model path's
        "README.md": b"# tiny gpt2\n",
        "gpt2/pytorch_model.bin": b"a pickle is never fetched",
        "gpt2/modeling_gpt2.py": b"import os  # code is never fetched\n",
        "gpt2/extra/model.safetensors": b"a subfolder is not the model path",
    }


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def fetched_files(source_files: dict[str, bytes]) -> tuple[SourceFile, ...]:
    return tuple(SourceFile(p, len(source_files[p]), sha256(source_files[p])) for p in NEEDED)


def assert_splits_like(fetched: Fetched, gpt2_checkpoint: Path, tmp_path: Path) -> None:
    """The fetched folder splits into the very tensors the original checkpoint does."""
    ours = split_checkpoint(
        str(fetched.directory), "gpt2", 2, 10, tmp_path / "ours", file_format="safetensors"
    )
    reference = split_checkpoint(
        str(gpt2_checkpoint), "gpt2", 2, 10, tmp_path / "reference", file_format="safetensors"
    )
    assert [c.name for c in ours.components] == ["bottom", "trunk", "top"]
    for mine, theirs in zip(ours.components, reference.components, strict=True):
        assert mine.path and theirs.path
        expected = load_file(theirs.path)
        actual = load_file(mine.path)
        assert sorted(actual) == sorted(expected)
        assert all(torch.equal(actual[name], expected[name]) for name in expected)


# --- Hugging Face hub ---------------------------------------------------------------------


@pytest.fixture
def hub(source_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The harness's hub, serving the repository to the holder of `TOKEN`."""
    online(monkeypatch)
    with HubServer({REPO_ID: HubRepo(dict(source_files))}, token=TOKEN) as server:
        yield server


def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift conftest's offline mode (for 127.0.0.1 only: every test gives the endpoint), and
    forget any token of this machine."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


def hub_folder(cache: Path, hub: HubServer) -> Path:
    return cache / "hub" / "splitlearn--tiny-gpt2" / hub.repos[REPO_ID].commit


def fetch_from(hub: HubServer, cache: Path, log: io.StringIO, **options: str) -> Fetched:
    arguments: dict[str, str] = {"token": TOKEN, "model_path": "gpt2"} | options
    return fetch_hub(REPO_ID, cache, endpoint=hub.url, retry=FAST, log=log, **arguments)


def test_hub_fetches_only_what_a_split_needs_at_the_resolved_commit(
    hub, source_files, gpt2_checkpoint, tmp_path
):
    log = io.StringIO()
    fetched = fetch_from(hub, tmp_path / "cache", log)
    commit = hub.repos[REPO_ID].commit
    assert fetched.revision == commit
    assert fetched.directory == hub_folder(tmp_path / "cache", hub) / "gpt2"
    assert fetched.files == fetched_files(source_files)
    assert sorted(hub.file_requests()) == sorted(
        (method, path) for path in NEEDED for method in ("GET", "HEAD")
    )
    assert names(fetched.directory) == ["config.json", "model.safetensors"]
    assert names(fetched.directory.parent) == ["gpt2"]  # no lock or part left
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}
    assert f"fetch {REPO_ID}@main:gpt2: commit {commit}, 2 files\n" in log.getvalue()
    assert_splits_like(fetched, gpt2_checkpoint, tmp_path)


def test_hub_fetch_by_commit_sha_finds_the_same_files(hub, source_files, tmp_path):
    commit = hub.repos[REPO_ID].commit
    fetched = fetch_from(hub, tmp_path / "cache", io.StringIO(), revision=commit)
    assert (fetched.revision, fetched.files) == (commit, fetched_files(source_files))


@pytest.fixture(scope="module")
def sharded_files(tmp_path_factory, checkpoint_writer, gpt2_config) -> dict[str, bytes]:
    """The same GPT-2 in shards with an index, beside a consolidated copy the index omits."""
    folder = checkpoint_writer(
        tmp_path_factory.mktemp("sharded") / "gpt2", gpt2_config, max_shard_size="40KB"
    )
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return files | {"consolidated.safetensors": b"a copy the index does not name"}


def test_hub_fetches_only_the_shards_the_index_names(
    sharded_files, gpt2_checkpoint, tmp_path, monkeypatch
):
    online(monkeypatch)
    shards = sorted(name for name in sharded_files if name.startswith("model-"))
    assert len(shards) > 1
    wanted = sorted(["config.json", "model.safetensors.index.json", *shards])
    with HubServer({REPO_ID: HubRepo(dict(sharded_files))}) as server:
        fetched = fetch_hub(
            REPO_ID, tmp_path / "cache", endpoint=server.url, retry=FAST, log=io.StringIO()
        )
        assert sorted({path for _, path in server.file_requests()}) == wanted
    assert [f.path for f in fetched.files] == wanted
    assert names(fetched.directory) == wanted
    assert_splits_like(fetched, gpt2_checkpoint, tmp_path)


def test_hub_shard_the_index_names_but_the_source_lacks_is_not_found(
    sharded_files, tmp_path, monkeypatch
):
    online(monkeypatch)
    lacking = dict(sharded_files)
    gone = sorted(name for name in lacking if name.startswith("model-"))[1]
    del lacking[gone]
    with HubServer({REPO_ID: HubRepo(lacking)}) as server, pytest.raises(SourceError) as caught:
        fetch_hub(REPO_ID, tmp_path / "cache", endpoint=server.url, retry=FAST, log=io.StringIO())
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND
    assert str(caught.value) == (
        f"model.safetensors.index.json names {gone}, not in {REPO_ID}@main"
    )


def test_hub_resumes_a_partial_download(hub, source_files, tmp_path):
    weights = source_files["gpt2/model.safetensors"]
    half = len(weights) // 2
    folder = hub_folder(tmp_path / "cache", hub) / "gpt2"
    folder.mkdir(parents=True)
    (folder / ".model.safetensors.part").write_bytes(weights[:half])
    log = io.StringIO()
    fetched = fetch_from(hub, tmp_path / "cache", log)
    downloads = [
        r.range for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")
    ]
    assert downloads == [f"bytes={half}-"]
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not (folder / ".model.safetensors.part").exists()
    assert fetched.files == fetched_files(source_files)
    assert "resuming at" in log.getvalue()


def test_hub_detects_a_corrupted_byte_and_keeps_nothing_of_it(hub, tmp_path):
    hub.repos[REPO_ID].corrupted.add("gpt2/model.safetensors")
    with pytest.raises(SourceError) as caught:
        fetch_from(hub, tmp_path / "cache", io.StringIO())
    assert caught.value.reason is Reason.SOURCE_DIGEST_MISMATCH
    assert str(caught.value).startswith("gpt2/model.safetensors from splitlearn/tiny-gpt2@main")
    assert " has sha256 " in str(caught.value)
    folder = hub_folder(tmp_path / "cache", hub) / "gpt2"
    assert names(folder) == ["config.json"]


def test_hub_replaces_a_cached_file_that_no_longer_matches(hub, source_files, tmp_path):
    fetch_from(hub, tmp_path / "cache", io.StringIO())
    cached = hub_folder(tmp_path / "cache", hub) / "gpt2" / "model.safetensors"
    cached.write_bytes(flipped(cached.read_bytes()))
    hub.requests.clear()
    log = io.StringIO()
    fetched = fetch_from(hub, tmp_path / "cache", log)
    assert cached.read_bytes() == source_files["gpt2/model.safetensors"]
    assert fetched.files == fetched_files(source_files)
    assert hub.file_requests() == [("HEAD", NEEDED[1]), ("GET", NEEDED[1])]
    assert "  gpt2/config.json: cached, verified\n" in log.getvalue()
    assert "  gpt2/model.safetensors: the cached copy differs" in log.getvalue()


def test_hub_bad_token_is_unauthorized_at_once_and_never_shown(hub, tmp_path):
    log = io.StringIO()
    with pytest.raises(SourceError) as caught:
        fetch_from(hub, tmp_path / "cache", log, token="hf_wrong_secret_token")
    assert caught.value.reason is Reason.SOURCE_UNAUTHORIZED
    assert Reason.SOURCE_UNAUTHORIZED.exit_code is ExitCode.INVALID
    assert len(hub.requests) == 1  # not retried
    assert "hf_wrong_secret_token" not in str(caught.value) + log.getvalue()


def test_hub_errors_that_echo_the_token_are_retried_and_shown_without_it(hub, tmp_path):
    hub.outage = (503, f"upstream refused the token {TOKEN}")
    log = io.StringIO()
    with pytest.raises(SourceError) as caught:
        fetch_from(hub, tmp_path / "cache", log)
    assert caught.value.reason is Reason.SOURCE_UNAVAILABLE
    assert len(hub.requests) == 3
    assert str(caught.value).startswith(f"reading {REPO_ID}@main:gpt2 failed 3 times, last: ")
    assert "upstream refused the token ***" in str(caught.value)
    assert TOKEN not in str(caught.value) + log.getvalue()
    assert log.getvalue().count("upstream refused the token ***") == 2


@pytest.mark.parametrize(
    ("repo_id", "options"),
    [
        ("splitlearn/missing", {}),
        (REPO_ID, {"revision": "no-such-branch"}),
        (REPO_ID, {"model_path": "nope"}),
    ],
    ids=["repository", "revision", "model-path"],
)
def test_hub_missing_source_is_not_found_at_once(hub, tmp_path, repo_id, options):
    arguments = {"token": TOKEN, "model_path": "gpt2", "endpoint": hub.url} | options
    with pytest.raises(SourceError) as caught:
        fetch_hub(repo_id, tmp_path / "cache", retry=FAST, log=io.StringIO(), **arguments)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND
    assert len(hub.requests) == 1


def test_hub_down_is_unavailable_after_bounded_retries(tmp_path, monkeypatch):
    online(monkeypatch)
    log = io.StringIO()
    with pytest.raises(SourceError) as caught:
        fetch_hub(REPO_ID, tmp_path / "cache", endpoint=closed_port_url(), retry=FAST, log=log)
    assert caught.value.reason is Reason.SOURCE_UNAVAILABLE
    assert str(caught.value).startswith(f"reading {REPO_ID}@main failed 3 times, last: ")
    assert [line.split("; ")[-1] for line in log.getvalue().splitlines()] == [
        "retry 1/2 in 0.01 s",
        "retry 2/2 in 0.02 s",
    ]


def test_fetch_command_writes_the_result_and_reads_the_token_from_the_environment(
    hub, source_files, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    result_file = tmp_path / "result.json"
    args = parser.parse_args(
        [
            *("--hub", REPO_ID, "--endpoint", hub.url, "--model-path", "gpt2"),
            *("--cache", str(tmp_path / "cache"), "--result-file", str(result_file)),
        ]
    )
    assert args.handler(args) == ExitCode.OK
    assert json.loads(result_file.read_text()) == {
        "directory": str(hub_folder(tmp_path / "cache", hub) / "gpt2"),
        "revision": hub.repos[REPO_ID].commit,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256}
            for f in fetched_files(source_files)
        ],
    }


def test_split_from_the_hub_records_the_revision_and_reuses_files_of_the_same_revision(
    hub, source_files, tmp_path, monkeypatch, capsys
):
    """The Job's one process: fetch, split, and `source` in the result (status.source). A re-run
    of the same commit keeps the intact files and writes nothing."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    storage, result_file = tmp_path / "models", tmp_path / "result.json"
    command = [
        "split", "--hub", REPO_ID, "--endpoint", hub.url, "--model-path", "gpt2",
        "--split", "2-10", "--storage", str(storage), "--result-file", str(result_file),
    ]  # fmt: skip
    assert cli_main(command) == ExitCode.OK
    first = json.loads(result_file.read_text())
    commit = hub.repos[REPO_ID].commit
    assert first["modelName"] == "gpt2" and first["reused"] is False
    assert first["source"] == {
        "revision": commit,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256}
                  for f in fetched_files(source_files)],
    }  # fmt: skip
    trunk = json.loads((storage / "trunk/gpt2_2-10_trunk_metadata.json").read_text())
    assert trunk["source"] == f"hub:{REPO_ID}@{commit}/gpt2"
    assert names(storage / ".cache" / "sources" / "hub") == ["splitlearn--tiny-gpt2"]
    written = {p: p.stat().st_mtime_ns for p in storage.glob("*/gpt2_2-10_*")}

    capsys.readouterr()
    assert cli_main(command) == ExitCode.OK
    second = json.loads(result_file.read_text())
    assert second["reused"] is True
    assert second["components"] == first["components"] and second["source"] == first["source"]
    assert {p: p.stat().st_mtime_ns for p in storage.glob("*/gpt2_2-10_*")} == written
    assert f"Up to date: gpt2 2-10 from hub:{REPO_ID}@{commit}/gpt2" in capsys.readouterr().out


def test_split_takes_exactly_one_source(tmp_path, capsys):
    result_file = tmp_path / "r.json"
    command = ["split", "--model", "x", "--hub", REPO_ID, "--split", "2-10",
               "--result-file", str(result_file)]  # fmt: skip
    assert cli_main(command) == ExitCode.INVALID
    assert json.loads(result_file.read_text())["error"] == {
        "reason": "InvalidInput",
        "message": "give exactly one of --model, --hub, --s3 (got 2)",
    }


@pytest.mark.parametrize(
    ("arguments", "refused"),
    [
        (["--s3", "s3://b/p", "--revision", "v1"], "--revision cannot go with --s3"),
        (["--hub", REPO_ID, "--region", "eu-west-1"], "--region cannot go with --hub"),
    ],
)
def test_fetch_command_refuses_the_other_sources_options(arguments, refused, tmp_path):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args([*arguments, "--cache", str(tmp_path)])
    with pytest.raises(InputError, match=refused):
        args.handler(args)


@pytest.mark.parametrize(
    ("text", "clean"), [("", ""), (".", ""), ("a/b/", "a/b"), ("./a//b", "a/b")]
)
def test_model_path_is_normalised(text, clean):
    assert clean_relative_path(text, "the model path") == clean


@pytest.mark.parametrize("text", ["../a", "a/../../b", "/etc", "a\\b"])
def test_model_path_outside_the_source_is_refused(text):
    with pytest.raises(InputError, match="the model path"):
        clean_relative_path(text, "the model path")


@pytest.mark.parametrize(("uri", "parsed"), [("s3://b", ("b", "")), ("s3://b/p/q/", ("b", "p/q"))])
def test_s3_uri_is_parsed(uri, parsed):
    assert parse_s3_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["http://b/p", "s3://", "s3://b/../p"])
def test_s3_uri_that_is_not_one_is_refused(uri):
    with pytest.raises(InputError):
        parse_s3_uri(uri)


@pytest.mark.parametrize("transient", [_hub_transient, _s3_transient], ids=["hub", "s3"])
def test_a_full_or_read_only_cache_is_not_retried_as_a_network_failure(transient):
    """The cache's own errors go to `splitcore`'s StorageFull / StorageNotWritable instead."""
    assert not transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not transient(PermissionError(errno.EACCES, "Permission denied"))
    assert transient(OSError("Consistency check failed: file should be of size 10"))


# --- S3 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_url(source_files: dict[str, bytes]) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with the repository under s3://models/team/tiny/;
    config.json is uploaded with a SHA-256 checksum, the rest with only an md5 ETag."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "moto-access-key",
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata address
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }.items():
            patch.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for path, content in source_files.items():
            checksum = {"ChecksumAlgorithm": "SHA256"} if path.endswith(".json") else {}
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{path}", Body=content, **checksum)
        yield url
        server.stop()


def fetch_s3_from(
    url: str, cache: Path, log: io.StringIO, uri: str = f"s3://{BUCKET}/{PREFIX}"
) -> Fetched:
    return fetch_s3(
        uri, cache, endpoint_url=url, region="us-east-1", model_path="gpt2", retry=FAST, log=log
    )


def s3_etags(url: str) -> dict[str, str]:
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    return {
        path: client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{path}")["ETag"].strip('"')
        for path in NEEDED
    }


def test_s3_fetches_only_what_a_split_needs(s3_url, source_files, gpt2_checkpoint, tmp_path):
    log = io.StringIO()
    fetched = fetch_s3_from(s3_url, tmp_path / "cache", log)
    revision = etags_digest(s3_etags(s3_url))
    assert fetched.revision == revision
    assert fetched.directory == tmp_path / "cache" / "s3" / BUCKET / PREFIX / revision / "gpt2"
    assert fetched.files == fetched_files(source_files)
    assert names(fetched.directory) == ["config.json", "model.safetensors"]
    assert f"fetch s3://{BUCKET}/{PREFIX}/gpt2: revision {revision}, 2 files\n" in log.getvalue()
    assert_splits_like(fetched, gpt2_checkpoint, tmp_path)


def test_s3_resumes_a_partial_download(s3_url, source_files, tmp_path):
    weights = source_files["gpt2/model.safetensors"]
    folder = tmp_path / "cache" / "s3" / BUCKET / PREFIX / etags_digest(s3_etags(s3_url)) / "gpt2"
    folder.mkdir(parents=True)
    (folder / ".model.safetensors.part").write_bytes(weights[: len(weights) // 2])
    log = io.StringIO()
    fetched = fetch_s3_from(s3_url, tmp_path / "cache", log)
    assert fetched.files == fetched_files(source_files)
    assert (folder / "model.safetensors").read_bytes() == weights
    assert "  fetching gpt2/model.safetensors: " in log.getvalue()
    assert ", resuming at " in log.getvalue()
    assert names(folder) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    ("path", "digest"),
    [("gpt2/config.json", "sha256"), ("gpt2/model.safetensors", "md5 (ETag)")],
    ids=["checksum-sha256", "etag-md5"],
)
def test_s3_detects_a_corrupted_byte_by_the_digest_it_gives(
    s3_url, source_files, tmp_path, path, digest
):
    """A partial file whose first half went bad: its resumed download fails the check."""
    content = source_files[path]
    folder = tmp_path / "cache" / "s3" / BUCKET / PREFIX / etags_digest(s3_etags(s3_url))
    part = folder / "gpt2" / f".{Path(path).name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(flipped(content[: len(content) // 2 + 1]))
    with pytest.raises(SourceError) as caught:
        fetch_s3_from(s3_url, tmp_path / "cache", io.StringIO())
    assert caught.value.reason is Reason.SOURCE_DIGEST_MISMATCH
    assert f"{path} from s3://{BUCKET}/{PREFIX}/gpt2 has {digest} " in str(caught.value)
    assert not part.exists()
    assert not (folder / path).exists()


@pytest.mark.parametrize("uri", [f"s3://no-such-bucket/{PREFIX}", f"s3://{BUCKET}/no/such/prefix"])
def test_s3_missing_source_is_not_found(s3_url, tmp_path, uri):
    with pytest.raises(SourceError) as caught:
        fetch_s3_from(s3_url, tmp_path / "cache", io.StringIO(), uri=uri)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND


def test_s3_refused_keys_are_unauthorized_and_never_shown(s3_url, tmp_path, monkeypatch):
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now
    log = io.StringIO()
    with pytest.raises(SourceError) as caught:
        fetch_s3_from(s3_url, tmp_path / "cache", log)
    assert caught.value.reason is Reason.SOURCE_UNAUTHORIZED
    assert str(caught.value) == (
        f"listing s3://{BUCKET}/{PREFIX}/gpt2: InvalidAccessKeyId, access refused"
    )
    assert log.getvalue() == ""  # not retried
    assert S3_SECRET not in str(caught.value)


def test_s3_down_is_unavailable_after_bounded_retries(s3_url, tmp_path):
    log = io.StringIO()
    with pytest.raises(SourceError) as caught:
        fetch_s3_from(closed_port_url(), tmp_path / "cache", log)
    assert caught.value.reason is Reason.SOURCE_UNAVAILABLE
    assert Reason.SOURCE_UNAVAILABLE.exit_code is ExitCode.FAILURE
    assert str(caught.value).startswith(f"listing s3://{BUCKET}/{PREFIX}/gpt2 failed 3 times")
    assert len(log.getvalue().splitlines()) == 2  # two retries, then the error
