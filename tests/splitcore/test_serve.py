"""`splitcore serve`: the wire format, the health service, metrics, sessions, and every fault."""

from __future__ import annotations

import copy
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

import splitcore
from splitcore import ModelFactory, ServerConfig
from splitcore.proto.tensors import WireError, decode, encode
from splitcore.remote import RemoteError, RemoteInputError, RemoteTrunk, SessionLostError
from splitcore.serve import TrunkServer
from splitcore.storage import StorageManager, read_metadata

REPOSITORY = Path(__file__).resolve().parents[2]
GENERATED = ("trunk_pb2.py", "trunk_pb2.pyi", "trunk_pb2_grpc.py")
HIDDEN = 32  # the hidden size of every test family
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def storage(family_checkpoints, tmp_path_factory) -> Path:
    """llama and bert split 2-4, under their family names."""
    folder = tmp_path_factory.mktemp("storage")
    for name in ("llama", "bert"):
        ModelFactory.create_split_models(
            "auto",
            str(family_checkpoints[name]),
            2,
            4,
            storage_path=str(folder),
            auto_save=True,
            model_name=name,
        )
    return folder


def _config(**extras) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", enable_monitoring=False, config=extras)


@pytest.fixture
def server(storage):
    with TrunkServer(_config(), storage, port=0) as running:
        yield running


def _remote(server: TrunkServer, name: str = "llama", **options) -> RemoteTrunk:
    return RemoteTrunk(f"127.0.0.1:{server.port}", name, "2-4", **options)


def _hidden(batch: int = 2, tokens: int = 5, seed: int = 0, **options) -> torch.Tensor:
    return torch.randn(
        batch, tokens, HIDDEN, generator=torch.Generator().manual_seed(seed), **options
    )


def _local_trunk(storage: Path, name: str = "llama"):
    return splitcore.load_component(storage / "trunk" / f"{name}_2-4_trunk.pt")


def test_generated_code_is_current(tmp_path):
    """`make proto` regenerates exactly the committed modules (CI fails when they are stale)."""
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
               f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
               "splitcore/proto/trunk.proto"]  # fmt: skip
    subprocess.run(command, cwd=REPOSITORY, check=True)
    for name in GENERATED:
        regenerated = (tmp_path / "splitcore" / "proto" / name).read_bytes()
        committed = (REPOSITORY / "splitcore" / "proto" / name).read_bytes()
        assert regenerated == committed, f"splitcore/proto/{name} is stale: run `make proto`"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_tensors_travel_as_raw_bytes(dtype):
    tensor = (torch.arange(24).reshape(2, 3, 4) * 3 - 7).to(dtype)
    message = encode(tensor.transpose(1, 2))  # not contiguous: sent in logical order
    assert message.dtype == str(dtype).removeprefix("torch.")
    assert list(message.shape) == [2, 4, 3]
    assert len(message.data) == 24 * dtype.itemsize
    assert torch.equal(decode(message, "t", (message.dtype,)), tensor.transpose(1, 2))


def test_malformed_tensors_are_refused():
    message = encode(torch.zeros(2, 3))
    with pytest.raises(WireError, match="x: dtype 'float32' is not one of int64"):
        decode(message, "x", ("int64",))
    message.shape[:] = [2, 4]
    with pytest.raises(
        WireError, match=r"x: shape \[2, 4\] of float32 needs 32 bytes, the message has 24"
    ):
        decode(message, "x", ("float32",))
    with pytest.raises(WireError, match=r"dtype torch\.float64 cannot travel"):
        encode(torch.zeros(1, dtype=torch.float64))


def test_info_describes_the_served_file(server, storage):
    with _remote(server) as remote:
        info = remote.info
    path = storage / "trunk" / "llama_2-4_trunk.pt"
    assert (info.model_type, info.model_class) == ("llama", "LlamaTrunkModel")
    assert (info.start_layer, info.end_layer, info.num_layers) == (2, 4, 2)
    assert (info.hidden_size, info.dtype, info.supports_cache) == (HIDDEN, "float32", True)
    assert info.sha256 == read_metadata(path)["sha256"]


def test_bad_hidden_states_are_invalid_argument_naming_the_expected_shape(server):
    with _remote(server) as remote:
        expected = r"expected shape \[batch, tokens, 32\] float32 for trunk llama 2-4"
        with pytest.raises(RemoteInputError, match=rf"{expected}, got \[2, 5, 31\] float32"):
            remote(torch.zeros(2, 5, 31))
        with pytest.raises(RemoteInputError, match=rf"{expected}, got \[2, 5, 32\] float16"):
            remote(torch.zeros(2, 5, 32, dtype=torch.float16))
        with pytest.raises(RemoteInputError, match=rf"{expected}, got \[5, 32\] float32"):
            remote(torch.zeros(5, 32))
        with pytest.raises(RemoteInputError, match=r"attention_mask: expected shape \[2, 5\]"):
            remote(_hidden(), attention_mask=torch.ones(2, 4, dtype=torch.long))
        with pytest.raises(
            RemoteInputError, match=r"position_ids: expected shape \[2, 5\] or \[1, 5\]"
        ):
            remote(_hidden(), position_ids=torch.zeros(3, 5, dtype=torch.long))
        with pytest.raises(ValueError, match="hidden_states: dtype 'int64' is not one of float32"):
            remote(torch.zeros(2, 5, 32, dtype=torch.long))
        # The server is still there and answers correctly.
        assert remote(_hidden()).shape == (2, 5, HIDDEN)


def test_unknown_model_or_split_is_not_found_naming_what_is_served(server):
    endpoint = f"127.0.0.1:{server.port}"
    for name, split in (("absent", "2-4"), ("llama", "1-3")):
        with pytest.raises(RemoteError) as error:
            RemoteTrunk(endpoint, name, split)
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert f"no trunk {name} {split}" in error.value.details
        assert "trunks here: bert 2-4, llama 2-4" in error.value.details
    with pytest.raises(RemoteInputError, match=r"model name '\.\./x' is not a safe file name"):
        RemoteTrunk(endpoint, "../x", "2-4")


def test_oversized_message_is_resource_exhausted(storage):
    with (
        TrunkServer(_config(max_message_bytes=4096), storage, port=0) as server,
        _remote(server) as remote,
    ):
        assert remote(_hidden(1, 4)).shape == (1, 4, HIDDEN)  # 512 bytes of hidden states
        with pytest.raises(RemoteError) as error:
            remote(_hidden(4, 16))  # 8 KiB
        assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sessions_are_limited_and_idle_ones_expire(storage):
    with TrunkServer(_config(max_sessions=2), storage, port=0) as server:
        first, second, third = (_remote(server) for _ in range(3))
        first.open_session()
        second.open_session()
        with pytest.raises(
            RemoteError, match=r"too many sessions \(2 open, max_sessions=2\)"
        ) as error:
            third.open_session()
        assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        server.sessions.idle_seconds = 0.0  # every open session is now idle for too long
        third.open_session()
        server.sessions.idle_seconds = 600.0
        with pytest.raises(SessionLostError, match="session lost"):
            first.step(_hidden(), torch.ones(2, 5, dtype=torch.long), torch.arange(5)[None])
        assert first.session_id is None
        assert server.metrics.registry.get_sample_value("splitcore_serve_open_sessions") == 1
        for remote in (first, second, third):
            remote.close()


def test_corrupt_trunk_is_refused_at_load(server, storage, gpt2_checkpoint):
    ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 4, storage_path=str(storage), auto_save=True,
        model_name="corrupt",
    )  # fmt: skip
    path = StorageManager.get_split_model_path(storage, "corrupt", "trunk", "2-4")
    data = bytearray(path.read_bytes())
    data[-64] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RemoteError, match=r"sha256 \w+ differs from the metadata's") as error:
        _remote(server, "corrupt")
    assert error.value.code == grpc.StatusCode.DATA_LOSS
    for component in ("trunk", "bottom", "top"):
        weights = StorageManager.get_split_model_path(storage, "corrupt", component, "2-4")
        weights.unlink()
        StorageManager.get_model_metadata_path(weights).unlink()


def test_encoder_sessions_have_no_kv_cache(server):
    with _remote(server, "bert") as remote:
        assert not remote.info.supports_cache
        with pytest.raises(
            RemoteInputError, match="trunk bert 2-4 is an encoder: it has no KV cache"
        ):
            remote.step(_hidden(), torch.ones(2, 5, dtype=torch.long), torch.arange(5)[None])


def test_backward_of_an_unknown_forward_is_refused(server):
    with _remote(server) as remote:
        session = remote.open_session()
        with pytest.raises(RemoteError, match="forward 42 is not kept") as error:
            remote.backward_call(session, 42, _hidden())
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
        hidden = _hidden(requires_grad=True)
        output = remote(hidden)
        with pytest.raises(
            RemoteInputError, match=r"grad_output: expected shape \[2, 5, 32\] float32"
        ):
            remote.backward_call(session, 1, torch.zeros(2, 4, HIDDEN))
        output.sum().backward()  # the failed call did not consume the kept forward
        assert hidden.grad is not None


def test_save_never_overwrites_the_original_or_another_sessions_trunk(server, storage):
    with _remote(server, trainable=True, optimizer={"name": "sgd", "lr": 0.5}) as remote:
        remote(_hidden(requires_grad=True)).sum().backward()
        with pytest.raises(
            RemoteInputError, match="new_name 'llama' would overwrite the served trunk"
        ):
            remote.save("llama")
        with pytest.raises(RemoteInputError, match="is not a safe file name"):
            remote.save("../escape")
        path = Path(remote.save("llama-stepped"))
        assert path == storage / "trunk" / "llama-stepped_2-4_trunk.pt"
        assert Path(remote.save("llama-stepped")) == path  # the same session may save again
        metadata = read_metadata(path)
        assert (metadata["component"], metadata["split_config"]) == ("trunk", "2-4")
        assert metadata["source"] == str(storage / "trunk" / "llama_2-4_trunk.pt")
    with _remote(server) as other:
        with pytest.raises(RemoteError, match="exists and was not saved by this session") as error:
            other.save("llama-stepped")
        assert error.value.code == grpc.StatusCode.ALREADY_EXISTS
    stepped = splitcore.load_component(path)
    original = _local_trunk(storage)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(stepped.parameters(), original.parameters(), strict=True)
    )
    with _remote(server, "llama-stepped") as served, torch.no_grad():
        assert torch.equal(served(_hidden()), stepped(_hidden()))


def test_only_max_models_trunks_stay_loaded(storage):
    config = ServerConfig(host="127.0.0.1", enable_monitoring=False, max_models=1)
    with TrunkServer(config, storage, port=0) as server:
        llama = _remote(server)
        _remote(server, "bert").close()
        assert [t.key.model_name for t in server.trunks.loaded()] == ["bert"]
        with torch.no_grad():
            assert torch.equal(llama(_hidden()), _local_trunk(storage)(_hidden()))
        assert [t.key.model_name for t in server.trunks.loaded()] == ["llama"]
        assert server.metrics.registry.get_sample_value("splitcore_serve_loaded_models") == 1
        llama.close()


def _train_locally(trunk, hidden: torch.Tensor, gradient: torch.Tensor, lr: float):
    trunk = copy.deepcopy(trunk).requires_grad_(True)
    optimizer = torch.optim.SGD(trunk.parameters(), lr=lr)
    trunk(hidden).backward(gradient)
    optimizer.step()
    with torch.no_grad():
        return trunk(hidden)


def test_sixteen_concurrent_clients_get_correct_isolated_results(server, storage):
    """Each client trains its own copy with its own data; none sees another's step."""

    def client(index: int) -> torch.Tensor:
        hidden, gradient = _hidden(seed=index), _hidden(seed=100 + index)
        lr = 0.01 * (index + 1)
        with _remote(server, trainable=True, optimizer={"name": "sgd", "lr": lr}) as remote:
            remote(hidden).backward(gradient)
            with torch.no_grad():
                return remote(hidden)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    trunk = _local_trunk(storage)
    for index, result in enumerate(results):
        expected = _train_locally(
            trunk, _hidden(seed=index), _hidden(seed=100 + index), 0.01 * (index + 1)
        )
        assert (result - expected).abs().max().item() <= 1e-5, f"client {index}"
    with _remote(server) as untouched, torch.no_grad():
        assert torch.equal(untouched(_hidden()), trunk(_hidden()))


def test_restarted_server_loses_sessions_and_the_client_opens_a_new_one(storage):
    first = TrunkServer(_config(), storage, port=0)
    first.start()
    port = first.port
    remote = RemoteTrunk(f"127.0.0.1:{port}", "llama", "2-4")
    mask, positions = torch.ones(2, 5, dtype=torch.long), torch.arange(5)[None]
    remote.step(_hidden(), mask, positions, reset_cache=True)
    first.stop(grace=0)
    with TrunkServer(_config(), storage, port=port):
        with pytest.raises(SessionLostError, match="session lost: no session") as error:
            remote.step(_hidden(), torch.ones(2, 10, dtype=torch.long), positions + 5)
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        again = remote.step(_hidden(), mask, positions, reset_cache=True)
        with torch.no_grad():
            assert (again - _local_trunk(storage)(_hidden())).abs().max().item() <= 1e-6
        remote.close()


def test_bearer_token_guards_every_call_but_health(storage, monkeypatch):
    monkeypatch.setenv("TRUNK_TOKEN", "s3cret")
    with TrunkServer(_config(auth_token_env="TRUNK_TOKEN"), storage, port=0) as server:
        endpoint = f"127.0.0.1:{server.port}"
        for token in (None, "wrong"):
            with pytest.raises(RemoteError, match="missing or wrong bearer token") as error:
                RemoteTrunk(endpoint, "llama", "2-4", token=token)
            assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        with RemoteTrunk(endpoint, "llama", "2-4", token="s3cret") as remote:
            assert remote(_hidden()).shape == (2, 5, HIDDEN)
        with grpc.insecure_channel(endpoint) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
        assert reply.status == SERVING


def _openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=test-ca", cwd=folder)  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
        (folder / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
                 cwd=folder)  # fmt: skip
    return folder


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_mutual_tls(storage, certificates):
    pki = certificates
    config = _config(
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
        tls_client_ca_file=str(pki / "ca.pem"),
    )
    with TrunkServer(config, storage, port=0) as server:
        endpoint = f"127.0.0.1:{server.port}"
        ca = (pki / "ca.pem").read_bytes()
        with RemoteTrunk(
            endpoint, "llama", "2-4", root_certificates=ca,
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes(),
        ) as remote:  # fmt: skip
            assert remote(_hidden()).shape == (2, 5, HIDDEN)
        with pytest.raises(RemoteError) as error:  # no client certificate
            RemoteTrunk(endpoint, "llama", "2-4", root_certificates=ca, timeout=10)
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(RemoteError) as error:  # plaintext to a TLS port
            RemoteTrunk(endpoint, "llama", "2-4", timeout=10)
        assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_metrics_count_calls_codes_bytes_and_state(storage):
    config = ServerConfig(host="127.0.0.1", enable_monitoring=True)
    with TrunkServer(config, storage, port=0, metrics_port=0) as server, _remote(server) as remote:
        for _ in range(3):
            remote(_hidden())
        with pytest.raises(RemoteInputError):
            remote(torch.zeros(2, 5, 31))
        remote.open_session()
        sample = server.metrics.registry.get_sample_value
        assert sample("splitcore_serve_requests_total", {"method": "Forward", "code": "OK"}) == 3
        assert (
            sample(
                "splitcore_serve_requests_total", {"method": "Forward", "code": "INVALID_ARGUMENT"}
            )
            == 1
        )
        assert sample("splitcore_serve_request_seconds_count", {"method": "Forward"}) == 4
        sent = sample("splitcore_serve_sent_bytes_total", {"method": "Forward"})
        assert sent > 3 * 2 * 5 * HIDDEN * 4  # three replies of [2, 5, 32] float32
        assert sample("splitcore_serve_received_bytes_total", {"method": "Forward"}) > sent
        assert sample("splitcore_serve_loaded_models") == 1
        assert sample("splitcore_serve_open_sessions") == 1
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url) as response:
            text = response.read().decode()
        assert 'splitcore_serve_requests_total{code="OK",method="Forward"} 3.0' in text


def test_self_check_finds_a_broken_trunk(server):
    with _remote(server):
        assert server.self_check()
        trunk = server.trunks.loaded()[0]
        with torch.no_grad():
            for parameter in trunk.module.parameters():
                parameter.fill_(float("nan"))
        assert not server.self_check()


def test_drain_reports_not_serving_and_lets_calls_in_flight_finish(storage):
    server = TrunkServer(_config(), storage, port=0)
    server.start()
    endpoint = f"127.0.0.1:{server.port}"
    remote = RemoteTrunk(
        endpoint, "llama", "2-4", trainable=True, optimizer={"name": "sgd", "lr": 0.1}
    )
    module = server.sessions.get(remote.open_session()).module
    entered, release = threading.Event(), threading.Event()
    forward = module.forward

    def held_forward(*args, **kwargs):  # keeps the next call in flight until released
        entered.set()
        release.wait(60)
        return forward(*args, **kwargs)

    module.forward = held_forward
    with grpc.insecure_channel(endpoint) as channel, ThreadPoolExecutor(2) as pool:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == SERVING
        in_flight = pool.submit(remote, _hidden())
        assert entered.wait(60)
        stopping = pool.submit(server.stop, 60)
        assert next(watch).status == NOT_SERVING
        watch.cancel()
        release.set()
        result = in_flight.result()
        stopping.result()
    assert result.shape == (2, 5, HIDDEN)
    remote.close()


def test_serve_command_drains_on_sigterm_and_exits_0(storage, tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_path = tmp_path / "server_config.yaml"
    ServerConfig(host="127.0.0.1", port=port, enable_monitoring=False, log_level="INFO",
                 model_storage_dir=str(tmp_path / "elsewhere")).to_yaml(config_path)  # fmt: skip
    command = ["--config", str(config_path), "--storage", str(storage)]
    process = subprocess.Popen(
        [sys.executable, "-m", "splitcore", "serve", *command],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            reply = health.Check(request, wait_for_ready=True, timeout=60)
            assert reply.status == SERVING
            with RemoteTrunk(f"127.0.0.1:{port}", "llama", "2-4") as remote:
                assert remote(_hidden()).shape == (2, 5, HIDDEN)
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "draining calls in flight" in errors
    assert f"serving trunks of {storage} on 127.0.0.1:{port}" in errors


def test_serve_command_refuses_a_bad_config(tmp_path, capsys):
    from splitcore.cli import main

    config_path = tmp_path / "server_config.yaml"
    config_path.write_text("port: 70000\n")
    assert main(["serve", "--config", str(config_path)]) == 2
    assert "port: expected a TCP port 1-65535, got 70000" in capsys.readouterr().err
    config_path.write_text("config:\n  tls_cert_file: cert.pem\n")
    assert main(["serve", "--config", str(config_path)]) == 2
    assert "tls_cert_file and tls_key_file go together" in capsys.readouterr().err


def test_serve_command_parser_imports_neither_torch_nor_grpc():
    code = (
        "import argparse, sys; from splitcore.serve_command import configure_parser; "
        "configure_parser(argparse.ArgumentParser()); "
        "print(sorted({'torch', 'grpc', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
