"""The keys the operator sets for one served model: `trunks`, `allow_training`, `health_port`.

Fixtures and helpers come from test_serve.py (the same storage of llama and bert split 2-4).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitcore import ServerConfig
from splitcore.config import ConfigError
from splitcore.proto import trunk_pb2, trunk_pb2_grpc
from splitcore.remote import RemoteError, RemoteTrunk, SessionLostError
from splitcore.serve import ServeOptions, TrunkKey, TrunkServer
from splitcore.storage import StorageManager, read_metadata
from tests.splitcore.test_serve import (
    HIDDEN,
    NOT_SERVING,
    SERVING,
    _config,
    _hidden,
    _local_trunk,
    _remote,
    certificates,
    storage,
)

__all__ = ["certificates", "storage"]  # test_serve.py's fixtures, requested by name here

LLAMA = {"model_name": "llama", "split_config": "02-04"}  # "02-04" is the split 2-4
HEALTH_CHECK = health_pb2.HealthCheckRequest(service="")


def _health(port: int, timeout: float = 10) -> int:
    """The overall health status at `127.0.0.1:port`, asked in plaintext."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(HEALTH_CHECK, timeout=timeout).status)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_listed_trunks_are_loaded_before_serving_and_alone_served(storage):
    path = storage / "trunk" / "llama_2-4_trunk.pt"
    sha256 = str(read_metadata(path)["sha256"]).upper()  # hex digits in any case
    config = ServerConfig(
        host="127.0.0.1",
        enable_monitoring=False,
        max_models=1,
        config={"trunks": [{**LLAMA, "sha256": sha256}]},
    )
    server = TrunkServer(config, storage, port=0)
    try:
        # Constructed, not started: the trunk is already in memory, the status not yet SERVING.
        assert [t.key for t in server.trunks.loaded()] == [TrunkKey("llama", "2-4")]
        assert server.health.Check(HEALTH_CHECK, None).status == NOT_SERVING
        server.start()
        assert _health(server.port) == SERVING
        assert server.metrics.registry.get_sample_value("splitcore_serve_loaded_models") == 1
        with _remote(server) as remote, torch.no_grad():
            assert torch.equal(remote(_hidden()), _local_trunk(storage)(_hidden()))
        with pytest.raises(RemoteError) as error:
            RemoteTrunk(f"127.0.0.1:{server.port}", "bert", "2-4")  # in storage, not listed
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert error.value.details == (
            "trunk bert 2-4 is not served here; this server serves only llama 2-4"
        )
        assert [t.key.model_name for t in server.trunks.loaded()] == ["llama"]  # never evicted
    finally:
        server.stop(grace=0)


def _serve_exits(tmp_path: Path, storage: Path, trunk: dict[str, str]) -> tuple[int, str]:
    """Run `splitcore serve` listing `trunk`; its exit code and stderr (it must not serve)."""
    config_path = tmp_path / "server_config.yaml"
    ServerConfig(host="127.0.0.1", port=_free_port(), enable_monitoring=False,
                 model_storage_dir=str(storage), config={"trunks": [trunk]},
                 ).to_yaml(config_path)  # fmt: skip
    try:
        process = subprocess.run(
            [sys.executable, "-m", "splitcore", "serve", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("splitcore serve started serving instead of exiting")
    return process.returncode, process.stderr


@pytest.mark.parametrize("fault", ["missing", "corrupt", "sha256"])
def test_serve_exits_1_with_one_line_when_a_listed_trunk_cannot_be_served(fault, storage, tmp_path):
    """A pod that cannot serve its trunk crash-loops; the line says which trunk and why."""
    store = tmp_path / "store"
    path = store / "trunk" / "llama_2-4_trunk.pt"
    path.parent.mkdir(parents=True)
    source = storage / "trunk" / path.name
    for name in (path, StorageManager.get_model_metadata_path(path)):
        shutil.copy(source.with_name(name.name), name)
    recorded = read_metadata(path)["sha256"]
    trunk, expected = dict(LLAMA), ""
    if fault == "missing":
        trunk["model_name"] = "absent"
        expected = f"(absent 2-4): no trunk absent 2-4 in {store}; trunks here: llama 2-4"
    elif fault == "corrupt":
        data = bytearray(path.read_bytes())
        data[-64] ^= 0xFF
        path.write_bytes(bytes(data))
        expected = f"(llama 2-4): {path}: sha256 "
        expected_end = f"differs from the metadata's {recorded}; the file is corrupt or was "
        expected_end += "replaced, refusing to load it"
    else:
        trunk["sha256"] = "0" * 64
        expected = (
            f"(llama 2-4): {path} has sha256 {recorded} (its metadata), not the configured "
            f"{'0' * 64}; refusing to serve another trunk than the one asked for"
        )
    code, errors = _serve_exits(tmp_path, store, trunk)
    assert code == 1, errors
    assert "Traceback" not in errors
    (line,) = errors.splitlines()
    assert line.startswith(f"splitcore serve: config.trunks[0] {expected}"), line
    if fault == "corrupt":
        assert line.endswith(expected_end), line


def test_a_server_that_does_not_train_still_returns_input_gradients(storage):
    with TrunkServer(_config(allow_training=False), storage, port=0) as server:
        refusal = re.escape("this server does not train (config.allow_training: false)")
        trainable = _remote(server, trainable=True, optimizer={"name": "sgd", "lr": 0.1})
        with pytest.raises(RemoteError, match=rf"a trainable session: {refusal}") as error:
            trainable.open_session()
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
        trainable.close()
        with _remote(server) as frozen:
            hidden, gradient = _hidden(requires_grad=True), _hidden(seed=1)
            frozen(hidden).backward(gradient)  # a session, a kept forward, a Backward
            with pytest.raises(RemoteError, match=rf"Save: {refusal}") as error:
                frozen.save("llama-tuned")
            assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    local = _hidden(requires_grad=True)
    _local_trunk(storage)(local).backward(gradient)
    assert hidden.grad is not None
    assert (hidden.grad - local.grad).abs().max().item() <= 1e-6
    assert not (storage / "trunk" / "llama-tuned_2-4_trunk.pt").exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_health_port_answers_in_plaintext_while_the_main_port_speaks_tls(storage, certificates):
    config = ServerConfig(
        host="127.0.0.1",
        enable_monitoring=False,
        health_check_interval=0.05,
        config={
            "trunks": [LLAMA],
            "tls_cert_file": str(certificates / "server.pem"),
            "tls_key_file": str(certificates / "server.key"),
        },
    )
    server = TrunkServer(config, storage, port=0, health_port=0)
    assert server.health_port not in (None, server.port)
    server.start()
    try:
        assert _health(server.health_port) == SERVING
        with pytest.raises(grpc.RpcError) as error:  # plaintext to the TLS port
            _health(server.port, timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            stub = trunk_pb2_grpc.TrunkStub(channel)
            request = trunk_pb2.InfoRequest(trunk=trunk_pb2.TrunkRef(**LLAMA))
            with pytest.raises(grpc.RpcError) as error:  # the health service, nothing else
                stub.Info(request, timeout=5)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with RemoteTrunk(
            f"127.0.0.1:{server.port}", "llama", "2-4",
            root_certificates=(certificates / "ca.pem").read_bytes(),
        ) as remote:  # fmt: skip
            assert remote(_hidden()).shape == (2, 5, HIDDEN)
        with torch.no_grad():  # the self-check now fails: both ports say NOT_SERVING
            for parameter in server.trunks.loaded()[0].module.parameters():
                parameter.fill_(float("nan"))
        deadline = time.monotonic() + 10
        while _health(server.health_port) != NOT_SERVING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _health(server.health_port) == NOT_SERVING
    finally:
        server.stop(grace=0)
    with pytest.raises(grpc.RpcError) as error:  # stopped with the main server
        _health(server.health_port, timeout=2)
    assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_session_idle_seconds_is_each_sessions_idle_timeout(storage):
    with TrunkServer(_config(session_idle_seconds=0.3), storage, port=0) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = trunk_pb2_grpc.TrunkStub(channel).OpenSession(
                trunk_pb2.OpenSessionRequest(trunk=trunk_pb2.TrunkRef(**LLAMA))
            )
        assert reply.idle_timeout_seconds == pytest.approx(0.3)
        mask, positions = torch.ones(2, 5, dtype=torch.long), torch.arange(5)[None]
        with _remote(server) as remote:
            remote.step(_hidden(), mask, positions, reset_cache=True)
            time.sleep(0.5)
            with pytest.raises(SessionLostError):
                remote.step(_hidden(), mask, positions)


@pytest.mark.parametrize(
    ("settings", "extras", "message"),
    [
        ({}, {"trunks": [{**LLAMA, "split_config": "4-2"}]},
         r"config\.trunks\[0\]: split points must satisfy 0 < split_point_1 < split_point_2"),
        ({}, {"trunks": [{**LLAMA, "split_config": "2_4"}]},
         r"config\.trunks\[0\]: split_config must look like"),
        ({}, {"trunks": [{**LLAMA, "model_name": "../x"}]},
         r"config\.trunks\[0\]: model name '\.\./x' is not a safe file name"),
        ({}, {"trunks": [{**LLAMA, "sha256": "abc"}]},
         r"config\.trunks\[0\]\.sha256: expected 64 hex digits, got 'abc'"),
        ({}, {"trunks": [{"model": "llama"}]}, r"config\.trunks\[0\]: unknown field 'model'"),
        ({}, {"trunks": [LLAMA, {**LLAMA, "split_config": "2-4"}]},
         r"config\.trunks\[1\]: llama 2-4 is listed twice"),
        ({"max_models": 1}, {"trunks": [LLAMA, {**LLAMA, "model_name": "bert"}]},
         r"config\.trunks: lists 2 trunks but max_models is 1; served trunks are never "
         r"unloaded, so max_models must be at least 2"),
        ({}, {"allow_training": "no"}, r"config\.allow_training: expected true or false"),
        ({"port": 9000}, {"health_port": 9000}, r"config\.health_port: 9000 is already the port"),
        ({}, {"health_port": 8000}, r"config\.health_port: 8000 is already the metrics_port"),
        ({}, {"health_port": 0}, r"config\.health_port: expected a TCP port 1-65535, got 0"),
        ({}, {"session_idle_seconds": 0}, r"config\.session_idle_seconds: must be positive"),
    ],
)  # fmt: skip
def test_bad_options_are_config_errors(settings, extras, message):
    with pytest.raises(ConfigError, match=message):
        ServeOptions.from_config(ServerConfig(**settings, config=extras))


def test_options_default_to_todays_behaviour_and_keep_one_spelling():
    assert ServeOptions.from_config(ServerConfig()) == ServeOptions()
    options = ServeOptions.from_config(ServerConfig(config={"trunks": [LLAMA]}))
    assert [trunk.key for trunk in options.trunks] == [TrunkKey("llama", "2-4")]
    assert (options.allow_training, options.health_port) == (True, None)


def test_serve_command_refuses_bad_options_with_exit_2(tmp_path, capsys):
    from splitcore.cli import main

    config_path = tmp_path / "server_config.yaml"
    config_path.write_text("port: 9000\nconfig:\n  health_port: 9000\n")
    assert main(["serve", "--config", str(config_path)]) == 2
    assert capsys.readouterr().err == (
        "splitcore serve: config.health_port: 9000 is already the port\n"
    )
