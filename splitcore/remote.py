"""`splitcore.remote`: run the chain with the trunk on a `splitcore serve` server.

`RemoteTrunk` stands in for the trunk in `top(remote(bottom(ids, m), m), m)`: hidden states,
the attention mask and the positions go to the server, hidden states come back, and autograd
flows through the wire (`loss.backward()` sends the output gradient and hands the input
gradient back to the bottom). With `trainable=True` the server steps a private copy of the
trunk on every backward. `generate` runs text generation through the split with KV caches in
the bottom and the top here and in a session on the server, so each step sends one position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import torch
from torch import nn

from splitcore.proto import SESSION_LOST, trunk_pb2, trunk_pb2_grpc
from splitcore.proto.tensors import FLOAT_DTYPES, decode, encode

if TYPE_CHECKING:
    from splitcore.models.base import BottomModel, TopModel


class RemoteError(RuntimeError):
    """A call to the trunk server failed; `code` is its gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message


class RemoteInputError(RemoteError, ValueError):
    """The server refused the input (wrong hidden size, dtype, rank...): INVALID_ARGUMENT."""


class SessionLostError(RemoteError):
    """The server no longer has this client's session (restart or expiry); a new one opens on the
    next call, but its KV cache and any training not saved are gone."""


def remote_error(error: grpc.RpcError) -> RemoteError:
    """The Python exception for a failed call, by its status code."""
    code: grpc.StatusCode = error.code()
    message = str(error.details())
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RemoteInputError(code, message)
    if code == grpc.StatusCode.NOT_FOUND and message.startswith(SESSION_LOST):
        return SessionLostError(code, message)
    return RemoteError(code, message)


def open_channel(
    endpoint: str,
    *,
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
) -> grpc.Channel:
    """A channel to `endpoint`: TLS when given certificates, mutual TLS with a key and chain.

    The client accepts messages of any size; the server's `max_message_bytes` is the limit.
    """
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    if root_certificates is None and certificate_chain is None:
        return grpc.insecure_channel(endpoint, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return grpc.secure_channel(endpoint, credentials, options=options)


def _optimizer_message(optimizer: Mapping[str, Any]) -> trunk_pb2.Optimizer:
    options = {k: float(v) for k, v in optimizer.items() if k != "name"}
    return trunk_pb2.Optimizer(name=str(optimizer.get("name", "")), options=options)


class _ThroughTheWire(torch.autograd.Function):
    """Forward on the server keeping its graph; backward sends the output gradient there."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden_states: torch.Tensor,
        anchor: torch.Tensor,
        remote: RemoteTrunk,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        reply = remote.forward_call(hidden_states, attention_mask, position_ids, keep_graph=True)
        ctx.remote, ctx.session_id, ctx.forward_id = remote, remote.session_id, reply.forward_id
        return decode(reply.hidden_states, "hidden_states", FLOAT_DTYPES)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_input = ctx.remote.backward_call(ctx.session_id, ctx.forward_id, grad_output)
        return (grad_input if ctx.needs_input_grad[0] else None, None, None, None, None)


class RemoteTrunk(nn.Module):
    """The trunk `model_name` / `split_config` served at `endpoint`, as an `nn.Module`.

    Without `trainable`, forwards that need no gradient run on the served weights without a
    session. With `trainable=True` and `optimizer` (`{"name": "sgd", "lr": 0.1}` or `adam`),
    the server steps the session's private copy of the trunk on every backward; `save` writes
    it into the server's storage under a new name.

    Training matches the full model step for step when its head is untied. A tied head (GPT-2,
    `tie_word_embeddings`) is two copies once split, the bottom's embedding and the top's head:
    their first gradients sum to the full model's, but they then train apart.
    """

    def __init__(
        self,
        endpoint: str,
        model_name: str,
        split_config: str,
        *,
        trainable: bool = False,
        optimizer: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        super().__init__()
        if trainable != (optimizer is not None):
            raise ValueError(
                "trainable=True goes with an optimizer, e.g. {'name': 'sgd', 'lr': 0.1}"
            )
        self.endpoint = endpoint
        self.trunk = trunk_pb2.TrunkRef(model_name=model_name, split_config=split_config)
        self.trainable = trainable
        self.optimizer = dict(optimizer) if optimizer is not None else None
        self.timeout = timeout
        self.session_id: str | None = None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = open_channel(
            endpoint,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )
        self._stub = trunk_pb2_grpc.TrunkStub(self._channel)  # type: ignore[no-untyped-call]
        # Makes the output require grad (so backward reaches the server and steps the trunk)
        # even when the input does not; it is no parameter of the client's.
        self._anchor = torch.zeros((), requires_grad=trainable)
        self.info: trunk_pb2.InfoReply = self._call("Info", trunk_pb2.InfoRequest(trunk=self.trunk))

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            failure = remote_error(error)
            if isinstance(failure, SessionLostError):
                self.session_id = None
            raise failure from None

    def open_session(self) -> str:
        """This client's session (opened on first need): KV cache, trained copy, backward."""
        if self.session_id is None:
            request = trunk_pb2.OpenSessionRequest(trunk=self.trunk, trainable=self.trainable)
            if self.optimizer is not None:
                request.optimizer.CopyFrom(_optimizer_message(self.optimizer))
            self.session_id = self._call("OpenSession", request).session_id
        return self.session_id

    def close(self) -> None:
        """Close the session (its trained weights are gone unless saved) and the channel."""
        if self.session_id is not None:
            with contextlib.suppress(RemoteError):
                self._call(
                    "CloseSession", trunk_pb2.CloseSessionRequest(session_id=self.session_id)
                )
            self.session_id = None
        self._channel.close()

    def __enter__(self) -> RemoteTrunk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def forward_call(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        *,
        keep_graph: bool = False,
        use_cache: bool = False,
        reset_cache: bool = False,
    ) -> trunk_pb2.ForwardReply:
        """One `Forward` call; in the session when anything needs one."""
        request = trunk_pb2.ForwardRequest(
            hidden_states=encode(hidden_states),
            keep_graph=keep_graph,
            use_cache=use_cache,
            reset_cache=reset_cache,
        )
        if keep_graph or use_cache or self.trainable:
            request.session_id = self.open_session()
        else:
            request.trunk.CopyFrom(self.trunk)
        if attention_mask is not None:
            request.attention_mask.CopyFrom(encode(attention_mask))
        if position_ids is not None:
            request.position_ids.CopyFrom(encode(position_ids))
        reply: trunk_pb2.ForwardReply = self._call("Forward", request)
        return reply

    def backward_call(
        self, session_id: str, forward_id: int, grad_output: torch.Tensor
    ) -> torch.Tensor:
        request = trunk_pb2.BackwardRequest(
            session_id=session_id, forward_id=forward_id, grad_output=encode(grad_output)
        )
        reply = self._call("Backward", request)
        return decode(reply.grad_input, "grad_input", FLOAT_DTYPES)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states `[B, T, H]` -> the trunk's hidden states, differentiable."""
        if torch.is_grad_enabled() and (hidden_states.requires_grad or self.trainable):
            output: torch.Tensor = _ThroughTheWire.apply(  # type: ignore[no-untyped-call]
                hidden_states, self._anchor, self, attention_mask, position_ids
            )
            return output
        reply = self.forward_call(hidden_states, attention_mask, position_ids)
        return decode(reply.hidden_states, "hidden_states", FLOAT_DTYPES)

    def step(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        reset_cache: bool = False,
    ) -> torch.Tensor:
        """One generation step against the session's KV cache (`reset_cache` starts afresh)."""
        reply = self.forward_call(
            hidden_states, attention_mask, position_ids, use_cache=True, reset_cache=reset_cache
        )
        return decode(reply.hidden_states, "hidden_states", FLOAT_DTYPES)

    def save(self, new_name: str) -> str:
        """Save the session's trunk as `new_name` in the server's storage; its path there."""
        request = trunk_pb2.SaveRequest(session_id=self.open_session(), new_name=new_name)
        return str(self._call("Save", request).path)


def _token_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def generate(
    bottom: BottomModel,
    remote: RemoteTrunk,
    top: TopModel,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = None,
    do_sample: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """`input_ids` followed by up to `max_new_tokens` new ones, generated through the split.

    Greedy by default, as the full model's `generate(do_sample=False)`: positions follow the
    attention mask (left padding), a sequence that produced the end-of-sequence token is
    padded, and generation stops when all have. `do_sample=True` samples from the softmax of
    the logits (temperature 1, no top-k), reproducibly with `seed`.
    """
    config = top.config
    eos = torch.tensor(_token_list(config.eos_token_id), dtype=torch.long)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if len(eos) else 0)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    bottom_cache, top_cache = bottom.new_cache(), top.new_cache()
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    output, step_ids = input_ids, input_ids
    with torch.no_grad():
        for step in range(max_new_tokens):
            hidden = bottom(
                step_ids, attention_mask=mask, position_ids=positions, cache=bottom_cache
            )
            hidden = remote.step(hidden, mask, positions, reset_cache=step == 0)
            logits = top(hidden, attention_mask=mask, position_ids=positions, cache=top_cache)
            scores = logits[:, -1].float()
            if do_sample:
                probabilities = torch.softmax(scores, dim=-1)
                next_ids = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
            else:
                next_ids = scores.argmax(dim=-1)
            next_ids = torch.where(unfinished, next_ids, torch.as_tensor(pad))
            output = torch.cat([output, next_ids[:, None]], dim=1)
            if len(eos):
                unfinished &= ~torch.isin(next_ids, eos)
                if not unfinished.any():
                    break
            step_ids = next_ids[:, None]
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            positions = positions[:, -1:] + 1
    return output
