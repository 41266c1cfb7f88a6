"""`splitcore serve`: host the trunks of split models over gRPC (split learning and inference).

The client keeps the bottom and the top (its data and labels never leave it); this server runs
the trunk between them. By default it serves every trunk under the storage folder, addressed by
the guide's naming (model name + split), loads one on first use, keeps at most `max_models`
loaded (least recently used unloaded) and refuses a file whose sha256 differs from its metadata.
With `trunks` set it serves only those, loaded and verified before it reports SERVING.

Sessions hold what a client needs between calls: the KV cache of a generation, forwards kept
for `Backward`, and, for a trainable session, a private copy of the trunk and its optimizer,
so no other client ever sees that session's training until it is saved under a new name.

Settings come from `ServerConfig`; these optional keys of its `config` extras are read here
(other keys are left to other readers):

* `max_message_bytes` (default 64 MiB): the largest request or reply;
* `max_sessions` (64) and `session_idle_seconds` (600): open sessions, and how long an idle one
  lives;
* `tls_cert_file`, `tls_key_file` (TLS) and `tls_client_ca_file` (clients must then present a
  certificate signed by it: mutual TLS);
* `auth_token_env`: the environment variable holding a bearer token every call must carry (the
  health service stays open for probes);
* `drain_seconds` (30): how long SIGTERM waits for calls in flight;
* `trunks` (empty: every trunk in storage, loaded on first use): a list of `{model_name,
  split_config, sha256 (optional)}`; the server then serves only these, loads and verifies each
  before it binds (a missing or corrupt file, or a sha256 other than the configured one, ends
  `splitcore serve` with exit code 1 and one line naming the trunk) and never unloads them;
* `allow_training` (true): false refuses trainable sessions and `Save` (FAILED_PRECONDITION);
  `Backward` still returns input gradients (split learning through a frozen trunk);
* `health_port` (none): a second, plaintext port serving only the health service, for probes
  that cannot speak TLS (Kubernetes gRPC probes).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hmac
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from splitcore.config import ConfigError, ServerConfig, from_mapping
from splitcore.loading import find_component_file, load_component
from splitcore.models.base import TrunkModel
from splitcore.points import SplitPoints
from splitcore.proto import SESSION_LOST, trunk_pb2, trunk_pb2_grpc
from splitcore.proto.tensors import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    MASK_DTYPES,
    WireError,
    decode,
    dtype_name,
    encode,
)
from splitcore.storage import (
    CorruptComponentError,
    StorageManager,
    read_metadata,
    validate_model_name,
)

log = logging.getLogger("splitcore.serve")

HEALTH_SERVICE = ""  # the standard health service's overall status
#: Forwards a session keeps for `Backward`; older ones are dropped.
MAX_KEPT_FORWARDS = 8
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUNK_FILE = re.compile(r"^(?P<name>.+)_(?P<split>[0-9]+-[0-9]+)_trunk\.(pt|safetensors)$")
_OPTIMIZER_OPTIONS = {
    "sgd": ("lr", "momentum", "dampening", "weight_decay"),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay"),
}

Reply = TypeVar("Reply")


class StartupError(Exception):
    """A trunk of `config.trunks` cannot be served: `splitcore serve` exits 1 with this line."""


@dataclass(frozen=True)
class ServedTrunk:
    """An entry of `config.trunks`: a trunk loaded at start-up, and `sha256` its metadata's."""

    model_name: str
    split_config: str
    sha256: str | None = None

    @property
    def key(self) -> TrunkKey:
        return TrunkKey(self.model_name, self.split_config)


@dataclass(frozen=True)
class ServeOptions:
    """The serving keys of `ServerConfig.config` (see the module docstring)."""

    max_message_bytes: int = 64 * 2**20
    max_sessions: int = 64
    session_idle_seconds: float = 600.0
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    auth_token_env: str | None = None
    drain_seconds: float = 30.0
    trunks: list[ServedTrunk] = field(default_factory=list)
    allow_training: bool = True
    health_port: int | None = None

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServeOptions:
        """The keys of `config.config`, checked, and against the rest of `config`."""
        known = {f.name for f in dataclasses.fields(cls)}
        extras = {k: v for k, v in config.config.items() if k in known}
        options = from_mapping(cls, extras, "config")
        if (options.tls_cert_file is None) != (options.tls_key_file is None):
            raise ConfigError("config: tls_cert_file and tls_key_file go together")
        if options.tls_client_ca_file is not None and options.tls_cert_file is None:
            raise ConfigError("config: tls_client_ca_file needs tls_cert_file and tls_key_file")
        for name in ("max_message_bytes", "max_sessions"):
            if getattr(options, name) < 1:
                raise ConfigError(f"config.{name}: must be at least 1")
        if options.session_idle_seconds <= 0:
            raise ConfigError("config.session_idle_seconds: must be positive")
        if options.health_port is not None:
            if not 0 < options.health_port < 65536:
                raise ConfigError(
                    f"config.health_port: expected a TCP port 1-65535, got {options.health_port}"
                )
            for name in ("port", "metrics_port"):
                if options.health_port == getattr(config, name):
                    raise ConfigError(
                        f"config.health_port: {options.health_port} is already the {name}"
                    )
        return dataclasses.replace(options, trunks=cls._served(options.trunks, config.max_models))

    @staticmethod
    def _served(trunks: list[ServedTrunk], max_models: int) -> list[ServedTrunk]:
        """`config.trunks` in their one spelling; served trunks are never unloaded, so they
        must fit in `max_models`."""
        served: list[ServedTrunk] = []
        for index, trunk in enumerate(trunks):
            where = f"config.trunks[{index}]"
            try:
                key = TrunkKey.parse(trunk.model_name, trunk.split_config)
            except ValueError as error:
                raise ConfigError(f"{where}: {error}") from None
            sha256 = trunk.sha256.lower() if trunk.sha256 is not None else None
            if sha256 is not None and not _SHA256.fullmatch(sha256):
                raise ConfigError(f"{where}.sha256: expected 64 hex digits, got {sha256!r}")
            if any(other.key == key for other in served):
                raise ConfigError(f"{where}: {key} is listed twice")
            served.append(ServedTrunk(key.model_name, key.split_config, sha256))
        if len(served) > max_models:
            raise ConfigError(
                f"config.trunks: lists {len(served)} trunks but max_models is {max_models}; "
                f"served trunks are never unloaded, so max_models must be at least {len(served)}"
            )
        return served

    def auth_token(self) -> str | None:
        if self.auth_token_env is None:
            return None
        token = os.environ.get(self.auth_token_env)
        if not token:
            raise ConfigError(f"config.auth_token_env: ${self.auth_token_env} is not set")
        return token


class ServiceError(Exception):
    """A call failed in a way the client should see: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


class ServerMetrics:
    """Prometheus metrics of one server, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        options: dict[str, Any] = {"namespace": "splitcore_serve", "registry": self.registry}
        self.requests = Counter(
            "requests", "Calls by method and status code", ["method", "code"], **options
        )
        self.latency = Histogram("request_seconds", "Call latency", ["method"], **options)
        self.received = Counter("received_bytes", "Request bytes", ["method"], **options)
        self.sent = Counter("sent_bytes", "Reply bytes", ["method"], **options)
        self.loaded_models = Gauge("loaded_models", "Trunks held in memory", **options)
        self.open_sessions = Gauge("open_sessions", "Sessions open", **options)


@dataclass(frozen=True)
class TrunkKey:
    model_name: str
    split_config: str

    def __str__(self) -> str:
        return f"{self.model_name} {self.split_config}"

    @classmethod
    def parse(cls, model_name: str, split_config: str) -> TrunkKey:
        """The key in its one spelling (`"02-10"` is `2-10`); `ValueError` for a bad one."""
        return cls(validate_model_name(model_name), str(SplitPoints.parse(split_config)))

    @classmethod
    def of(cls, ref: trunk_pb2.TrunkRef) -> TrunkKey:
        try:
            return cls.parse(ref.model_name, ref.split_config)
        except ValueError as error:
            raise invalid(str(error)) from None


@dataclass
class LoadedTrunk:
    """A trunk held in memory, shared read-only by every call that does not train it."""

    key: TrunkKey
    module: TrunkModel
    path: Path
    sha256: str

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return int(self.module.config.hidden_size)

    def info(self) -> trunk_pb2.InfoReply:
        module = self.module
        return trunk_pb2.InfoReply(
            model_type=module.adapter.model_type,
            model_class=type(module).__name__,
            start_layer=module.start_layer,
            end_layer=module.end_layer,
            num_layers=module.num_layers,
            hidden_size=self.hidden_size,
            dtype=dtype_name(self.dtype),
            sha256=self.sha256,
            supports_cache=module.adapter.supports_cache,
        )


class TrunkRegistry:
    """The trunks of a storage folder: loaded on first use, at most `max_models` in memory;
    or, when `served` lists some, only those, loaded by `preload` and never unloaded."""

    def __init__(
        self,
        storage: Path,
        max_models: int,
        metrics: ServerMetrics,
        served: list[ServedTrunk] | None = None,
    ) -> None:
        self.storage = storage
        self.max_models = max_models
        self.served = list(served or [])
        self._metrics = metrics
        self._loaded: OrderedDict[TrunkKey, LoadedTrunk] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def available(self) -> list[str]:
        """Every trunk file in storage, as `model split`."""
        folder = self.storage / "trunk"
        names = (m for p in folder.glob("*_trunk.*") if (m := _TRUNK_FILE.match(p.name)))
        return sorted({f"{m['name']} {m['split']}" for m in names})

    def loaded(self) -> list[LoadedTrunk]:
        with self._lock:
            return list(self._loaded.values())

    def preload(self) -> None:
        """Load and verify every served trunk; `StartupError` names the first that fails."""
        for index, served in enumerate(self.served):
            where = f"config.trunks[{index}] ({served.key})"
            try:
                trunk = self._load(served.key, served.sha256)
            except (ServiceError, ValueError, OSError) as error:
                raise StartupError(f"{where}: {error}") from None
            with self._lock:
                self._loaded[served.key] = trunk
                self._metrics.loaded_models.set(len(self._loaded))

    def get(self, key: TrunkKey) -> LoadedTrunk:
        if self.served:
            with self._lock:
                trunk = self._loaded.get(key)
            if trunk is None:
                names = ", ".join(str(served.key) for served in self.served)
                raise ServiceError(
                    grpc.StatusCode.NOT_FOUND,
                    f"trunk {key} is not served here; this server serves only {names}",
                )
            return trunk
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        with self._load_lock:  # one load at a time: loads are memory-heavy
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            trunk = self._load(key)
            with self._lock:
                self._loaded[key] = trunk
                while len(self._loaded) > self.max_models:
                    evicted, _ = self._loaded.popitem(last=False)
                    log.info("unloaded trunk %s (max_models=%d)", evicted, self.max_models)
                self._metrics.loaded_models.set(len(self._loaded))
        return trunk

    def forget(self, key: TrunkKey) -> None:
        """Drop `key` from memory (its file was just replaced); a served trunk stays."""
        if any(served.key == key for served in self.served):
            return
        with self._lock:
            self._loaded.pop(key, None)
            self._metrics.loaded_models.set(len(self._loaded))

    def _load(self, key: TrunkKey, expected_sha256: str | None = None) -> LoadedTrunk:
        """Load `key`'s file once its sha256 matches its metadata and, if given, the metadata's
        matches `expected_sha256` (checked first: it costs no hashing of the file)."""
        try:
            path = find_component_file(self.storage, key.model_name, "trunk", key.split_config)
        except FileNotFoundError:
            served = ", ".join(self.available()) or "none"
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"no trunk {key} in {self.storage}; trunks here: {served}",
            ) from None
        recorded = str(read_metadata(path)["sha256"])
        if expected_sha256 is not None and recorded != expected_sha256:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{path} has sha256 {recorded} (its metadata), not the configured "
                f"{expected_sha256}; refusing to serve another trunk than the one asked for",
            )
        try:
            module = load_component(path)
        except CorruptComponentError as error:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, str(error)) from None
        if not isinstance(module, TrunkModel):
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"{path} does not hold a trunk")
        module.requires_grad_(False)  # shared: only inputs ever get gradients
        log.info("loaded trunk %s from %s", key, path)
        return LoadedTrunk(key, module, path, recorded)


@dataclass
class Session:
    """One client's state between calls; its lock makes its calls run one at a time."""

    id: str
    trunk: LoadedTrunk
    module: TrunkModel
    trainable: bool
    optimizer: torch.optim.Optimizer | None = None
    cache: Any = None
    kept: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=OrderedDict)
    next_forward_id: int = 1
    optimizer_steps: int = 0
    saved_names: set[str] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, inputs: torch.Tensor, outputs: torch.Tensor) -> int:
        forward_id = self.next_forward_id
        self.next_forward_id += 1
        self.kept[forward_id] = (inputs, outputs)
        while len(self.kept) > MAX_KEPT_FORWARDS:
            self.kept.popitem(last=False)
        return forward_id


def build_optimizer(
    spec: trunk_pb2.Optimizer, parameters: list[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """`sgd` or `adam` over `parameters`, with the options the client named (and no others)."""
    name = spec.name.lower()
    if name not in _OPTIMIZER_OPTIONS:
        raise invalid(f"optimizer {spec.name!r} is not one of {', '.join(_OPTIMIZER_OPTIONS)}")
    options = dict(spec.options)
    unknown = sorted(set(options) - set(_OPTIMIZER_OPTIONS[name]))
    if unknown:
        raise invalid(
            f"optimizer {name} takes {', '.join(_OPTIMIZER_OPTIONS[name])}; "
            f"unknown: {', '.join(unknown)}"
        )
    if name == "sgd":
        return torch.optim.SGD(parameters, **options)
    betas = (options.pop("beta1", 0.9), options.pop("beta2", 0.999))
    return torch.optim.Adam(parameters, betas=betas, **options)


class SessionStore:
    """Open sessions: at most `max_sessions`, each expiring after `idle_seconds` unused."""

    def __init__(self, max_sessions: int, idle_seconds: float, metrics: ServerMetrics) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def expire_idle(self) -> None:
        deadline = time.monotonic() - self.idle_seconds
        with self._lock:
            for session_id in [i for i, s in self._sessions.items() if s.last_used < deadline]:
                del self._sessions[session_id]
                log.info("session %s expired after %.0f s idle", session_id, self.idle_seconds)
            self._metrics.open_sessions.set(len(self._sessions))

    def open(
        self, trunk: LoadedTrunk, trainable: bool, spec: trunk_pb2.Optimizer | None
    ) -> Session:
        self.expire_idle()
        module = trunk.module
        optimizer = None
        if trainable:
            if spec is None:
                raise invalid("a trainable session needs an optimizer (sgd or adam)")
            module = copy.deepcopy(module).requires_grad_(True)
            optimizer = build_optimizer(spec, list(module.parameters()))
        elif spec is not None:
            raise invalid("an optimizer needs a trainable session")
        session = Session(uuid.uuid4().hex, trunk, module, trainable, optimizer)
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many sessions ({len(self._sessions)} open, max_sessions="
                    f"{self.max_sessions}); close one, or wait for idle ones to expire after "
                    f"{self.idle_seconds:g} s",
                )
            self._sessions[session.id] = session
            self._metrics.open_sessions.set(len(self._sessions))
        return session

    def get(self, session_id: str) -> Session:
        self.expire_idle()
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"{SESSION_LOST}: no session {session_id!r} (it expired, was closed, or the "
                "server restarted); open a new one",
            )
        session.last_used = time.monotonic()
        return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)
            self._metrics.open_sessions.set(len(self._sessions))


def rpc(
    method: Callable[[TrunkServicer, Any], Reply],
) -> Callable[[TrunkServicer, Any, Any], Reply]:
    """Turn a handler's `ServiceError` into its status code, and count every call."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self: TrunkServicer, request: Any, context: grpc.ServicerContext) -> Reply:
        metrics = self.metrics
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        metrics.received.labels(name).inc(request.ByteSize())
        try:
            reply = method(self, request)
            metrics.sent.labels(name).inc(reply.ByteSize())  # type: ignore[attr-defined]
            return reply
        except ServiceError as error:
            code, message = error.code, error.message
            if code == grpc.StatusCode.DATA_LOSS:  # a file went bad: the operator must know
                log.error("%s refused: %s", name, message)
        except WireError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except Exception as error:  # the server never crashes on a call
            log.exception("%s failed", name)
            code, message = grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"
        finally:
            metrics.requests.labels(name, code.name).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - started)
        context.abort(code, message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return handler


def check_hidden(hidden: torch.Tensor, trunk: LoadedTrunk, field_name: str) -> None:
    """Hidden states must be `[B, T, H]` in the trunk's dtype; the message says so."""
    expected = f"[batch, tokens, {trunk.hidden_size}] {dtype_name(trunk.dtype)}"
    if hidden.ndim != 3 or hidden.shape[-1] != trunk.hidden_size or hidden.dtype != trunk.dtype:
        raise invalid(
            f"{field_name}: expected shape {expected} for trunk {trunk.key}, "
            f"got {list(hidden.shape)} {dtype_name(hidden.dtype)}"
        )


class TrunkServicer(trunk_pb2_grpc.TrunkServicer):
    """The `Trunk` service over a `TrunkRegistry` and a `SessionStore`."""

    def __init__(
        self,
        trunks: TrunkRegistry,
        sessions: SessionStore,
        metrics: ServerMetrics,
        allow_training: bool = True,
    ) -> None:
        self.trunks = trunks
        self.sessions = sessions
        self.metrics = metrics
        self.allow_training = allow_training

    def _refuse_training(self, what: str) -> None:
        """A server that does not train keeps its trunk frozen: no optimizer, nothing to save."""
        if not self.allow_training:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{what}: this server does not train (config.allow_training: false); "
                "a non-trainable session still returns input gradients from Backward",
            )

    @rpc
    def Info(self, request: trunk_pb2.InfoRequest) -> trunk_pb2.InfoReply:
        return self.trunks.get(TrunkKey.of(request.trunk)).info()

    @rpc
    def OpenSession(self, request: trunk_pb2.OpenSessionRequest) -> trunk_pb2.OpenSessionReply:
        if request.trainable:
            self._refuse_training("a trainable session")
        trunk = self.trunks.get(TrunkKey.of(request.trunk))
        spec = request.optimizer if request.HasField("optimizer") else None
        session = self.sessions.open(trunk, request.trainable, spec)
        log.info("session %s opened on %s (trainable=%s)", session.id, trunk.key, session.trainable)
        return trunk_pb2.OpenSessionReply(
            session_id=session.id,
            info=trunk.info(),
            idle_timeout_seconds=self.sessions.idle_seconds,
        )

    @rpc
    def CloseSession(self, request: trunk_pb2.CloseSessionRequest) -> trunk_pb2.CloseSessionReply:
        self.sessions.close(request.session_id)
        return trunk_pb2.CloseSessionReply()

    @rpc
    def Forward(self, request: trunk_pb2.ForwardRequest) -> trunk_pb2.ForwardReply:
        session = self.sessions.get(request.session_id) if request.session_id else None
        if session is None and (request.use_cache or request.reset_cache or request.keep_graph):
            raise invalid("use_cache, reset_cache and keep_graph need a session_id")
        if request.use_cache and request.keep_graph:
            raise invalid("a forward either appends to the KV cache or is kept for Backward")
        trunk = session.trunk if session else self.trunks.get(TrunkKey.of(request.trunk))
        hidden = decode(request.hidden_states, "hidden_states", FLOAT_DTYPES)
        check_hidden(hidden, trunk, "hidden_states")
        with session.lock if session else contextlib.nullcontext():
            return self._forward(request, trunk, session, hidden)

    def _forward(
        self,
        request: trunk_pb2.ForwardRequest,
        trunk: LoadedTrunk,
        session: Session | None,
        hidden: torch.Tensor,
    ) -> trunk_pb2.ForwardReply:
        module = session.module if session else trunk.module
        cache = None
        if session is not None and request.use_cache:
            if not module.adapter.supports_cache:
                raise invalid(f"trunk {trunk.key} is an encoder: it has no KV cache")
            if request.reset_cache or session.cache is None:
                session.cache = module.new_cache()
            cache = session.cache
        past = 0 if cache is None else cache.get_seq_length(module.start_layer)
        batch, tokens = hidden.shape[:2]
        mask = positions = None
        if request.HasField("attention_mask"):
            mask = decode(request.attention_mask, "attention_mask", MASK_DTYPES)
            if tuple(mask.shape) != (batch, past + tokens):
                raise invalid(
                    f"attention_mask: expected shape [{batch}, {past + tokens}] "
                    f"(batch, cached {past} + new {tokens} tokens), got {list(mask.shape)}"
                )
        if request.HasField("position_ids"):
            positions = decode(request.position_ids, "position_ids", INDEX_DTYPES).long()
            if (
                positions.ndim != 2
                or positions.shape[0] not in (1, batch)
                or positions.shape[1] != tokens
            ):
                raise invalid(
                    f"position_ids: expected shape [{batch}, {tokens}] or [1, {tokens}], "
                    f"got {list(positions.shape)}"
                )
        reply = trunk_pb2.ForwardReply()
        if session is not None and request.keep_graph:
            inputs = hidden.detach().requires_grad_(True)
            with torch.enable_grad():
                outputs = module(inputs, mask, positions)
            reply.forward_id = session.keep(inputs, outputs)
        else:
            with torch.inference_mode():
                outputs = module(hidden, mask, positions, cache)
            if cache is not None:
                reply.cache_length = cache.get_seq_length(module.start_layer)
        reply.hidden_states.CopyFrom(encode(outputs))
        return reply

    @rpc
    def Backward(self, request: trunk_pb2.BackwardRequest) -> trunk_pb2.BackwardReply:
        session = self.sessions.get(request.session_id)
        with session.lock:
            kept = session.kept.get(request.forward_id)
            if kept is None:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"forward {request.forward_id} is not kept in session {session.id}: never "
                    f"kept, already used, dropped (the last {MAX_KEPT_FORWARDS} are kept) or "
                    "made stale by an optimizer step",
                )
            inputs, outputs = kept
            grad_output = decode(request.grad_output, "grad_output", FLOAT_DTYPES)
            if grad_output.shape != outputs.shape or grad_output.dtype != outputs.dtype:
                raise invalid(
                    f"grad_output: expected shape {list(outputs.shape)} "
                    f"{dtype_name(outputs.dtype)}, got {list(grad_output.shape)} "
                    f"{dtype_name(grad_output.dtype)}"
                )
            del session.kept[request.forward_id]
            parameters = list(session.module.parameters()) if session.trainable else []
            gradients = torch.autograd.grad(
                outputs, [inputs, *parameters], grad_outputs=grad_output, allow_unused=True
            )
            if session.optimizer is not None:
                for parameter, gradient in zip(parameters, gradients[1:], strict=True):
                    parameter.grad = gradient
                session.optimizer.step()
                session.optimizer.zero_grad(set_to_none=True)
                session.optimizer_steps += 1
                session.kept.clear()  # their graphs hold the weights before this step
            grad_input = gradients[0] if gradients[0] is not None else torch.zeros_like(inputs)
            return trunk_pb2.BackwardReply(
                grad_input=encode(grad_input), optimizer_steps=session.optimizer_steps
            )

    @rpc
    def Save(self, request: trunk_pb2.SaveRequest) -> trunk_pb2.SaveReply:
        self._refuse_training("Save")
        session = self.sessions.get(request.session_id)
        original = session.trunk.key
        try:
            validate_model_name(request.new_name)
        except ValueError as error:
            raise invalid(str(error)) from None
        if request.new_name == original.model_name:
            raise invalid(f"new_name {request.new_name!r} would overwrite the served trunk")
        path = StorageManager.get_split_model_path(
            self.trunks.storage, request.new_name, "trunk", original.split_config
        )
        with session.lock:
            if path.exists() and request.new_name not in session.saved_names:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{path} exists and was not saved by this session; choose another name",
                )
            module = session.module
            module.context = dataclasses.replace(module.context, source=str(session.trunk.path))
            module.save_split_model(path)
            session.saved_names.add(request.new_name)
        self.trunks.forget(TrunkKey(request.new_name, original.split_config))
        metadata_path = StorageManager.get_model_metadata_path(path)
        log.info("session %s saved its trunk as %s", session.id, path)
        return trunk_pb2.SaveReply(
            path=str(path),
            metadata_path=str(metadata_path),
            sha256=str(read_metadata(metadata_path)["sha256"]),
        )


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Every call but the health service's must carry `authorization: Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._refusal = grpc.unary_unary_rpc_method_handler(self._refuse)

    @staticmethod
    def _refuse(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(details)
        given = dict(details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(details)
        return self._refusal


class TrunkServer:
    """The gRPC server: trunk service, health service, metrics and the self-check."""

    def __init__(
        self,
        config: ServerConfig,
        storage: str | Path | None = None,
        *,
        port: int | None = None,
        metrics_port: int | None = None,
        health_port: int | None = None,
    ) -> None:
        """`port`, `metrics_port` and `health_port` override the config's (0 picks a free
        port, for tests). The trunks of `config.trunks` are loaded here, before any port is
        bound: `StartupError` if one cannot be served."""
        self.config = config
        self.options = ServeOptions.from_config(config)
        self.storage = Path(storage if storage is not None else config.model_storage_dir)
        self.metrics = ServerMetrics()
        self.trunks = TrunkRegistry(
            self.storage, config.max_models, self.metrics, self.options.trunks
        )
        self.sessions = SessionStore(
            self.options.max_sessions, self.options.session_idle_seconds, self.metrics
        )
        self.health = health.HealthServicer()
        self.health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        token = self.options.auth_token()
        credentials = self._credentials()  # a bad TLS file fails before a long preload
        self.trunks.preload()
        limit = self.options.max_message_bytes
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
            interceptors=[BearerTokenInterceptor(token)] if token else [],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        servicer = TrunkServicer(
            self.trunks, self.sessions, self.metrics, self.options.allow_training
        )
        trunk_pb2_grpc.add_TrunkServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = f"{config.host}:{config.port if port is None else port}"
        if credentials is None:
            self.port = int(self._server.add_insecure_port(address))
        else:
            self.port = int(self._server.add_secure_port(address, credentials))
        self._health_server, self.health_port = self._plaintext_health(
            self.options.health_port if health_port is None else health_port
        )
        self._metrics_port = config.metrics_port if metrics_port is None else metrics_port
        self.metrics_port: int | None = None
        self._metrics_http: Any = None
        self._draining = threading.Event()
        self._checker = threading.Thread(
            target=self._self_check_loop, name="self-check", daemon=True
        )

    def _credentials(self) -> grpc.ServerCredentials | None:
        """The main port's TLS credentials (None: plaintext), read from the config's files."""
        options = self.options
        if options.tls_cert_file is None:
            return None
        assert options.tls_key_file is not None
        client_ca = (
            Path(options.tls_client_ca_file).read_bytes() if options.tls_client_ca_file else None
        )
        return grpc.ssl_server_credentials(
            [(Path(options.tls_key_file).read_bytes(), Path(options.tls_cert_file).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def _plaintext_health(self, port: int | None) -> tuple[grpc.Server | None, int | None]:
        """A second server on `port` with only the health service (the same servicer, so the
        same status): Kubernetes gRPC probes cannot speak TLS. (None, None) without a port."""
        if port is None:
            return None, None
        server = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        return server, int(server.add_insecure_port(f"{self.config.host}:{port}"))

    def start(self) -> None:
        if self.config.enable_monitoring:
            self._metrics_http, _ = start_http_server(
                self._metrics_port, addr=self.config.host, registry=self.metrics.registry
            )
            self.metrics_port = int(self._metrics_http.server_port)
        self._server.start()
        if self._health_server is not None:
            self._health_server.start()
        self._checker.start()
        self.health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving trunks of %s on %s:%d (max_models=%d, max_workers=%d)",
            self.storage, self.config.host, self.port, self.config.max_models,
            self.config.max_workers,
        )  # fmt: skip

    def __enter__(self) -> TrunkServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(grace=0)

    def self_check(self) -> bool:
        """Expire idle sessions, run a fixed probe through each loaded trunk; healthy if finite."""
        self.sessions.expire_idle()
        healthy = self.storage.is_dir()
        for trunk in self.trunks.loaded():
            probe = torch.randn(1, 2, trunk.hidden_size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                finite = bool(torch.isfinite(trunk.module(probe.to(trunk.dtype))).all())
            if not finite:
                log.error("self-check: trunk %s gives non-finite output", trunk.key)
            healthy = healthy and finite
        return healthy

    def _self_check_loop(self) -> None:
        while not self._draining.wait(self.config.health_check_interval):
            try:
                healthy = self.self_check()
            except Exception:
                log.exception("self-check failed")
                healthy = False
            if not self._draining.is_set():
                status = health_pb2.HealthCheckResponse
                self.health.set(HEALTH_SERVICE, status.SERVING if healthy else status.NOT_SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let calls in flight finish."""
        self._draining.set()
        self.health.enter_graceful_shutdown()
        self._server.stop(self.options.drain_seconds if grace is None else grace).wait()
        if self._health_server is not None:  # probes saw NOT_SERVING until the drain ended
            self._health_server.stop(0).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        log.info("stopped")


def serve_until_stopped(config_path: Path, storage: Path | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain and return 0; 2 for a bad configuration, 1
    when a trunk of `config.trunks` cannot be served. A failure is one line on stderr, no
    traceback: a crash-looping pod's termination message and logs end with it."""
    try:
        config = ServerConfig.from_yaml(config_path)
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        server = TrunkServer(config, storage)
    except (ConfigError, OSError) as error:
        print(f"splitcore serve: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"splitcore serve: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    while not stop.wait(1.0):
        pass
    log.info("draining calls in flight (up to %g s)", server.options.drain_seconds)
    server.stop()
    return 0
