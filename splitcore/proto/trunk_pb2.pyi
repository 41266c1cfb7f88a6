from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TrunkRef(_message.Message):
    __slots__ = ("model_name", "split_config")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    split_config: str
    def __init__(self, model_name: _Optional[str] = ..., split_config: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("trunk",)
    TRUNK_FIELD_NUMBER: _ClassVar[int]
    trunk: TrunkRef
    def __init__(self, trunk: _Optional[_Union[TrunkRef, _Mapping]] = ...) -> None: ...

class InfoReply(_message.Message):
    __slots__ = ("model_type", "model_class", "start_layer", "end_layer", "num_layers", "hidden_size", "dtype", "sha256", "supports_cache")
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_CLASS_FIELD_NUMBER: _ClassVar[int]
    START_LAYER_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_CACHE_FIELD_NUMBER: _ClassVar[int]
    model_type: str
    model_class: str
    start_layer: int
    end_layer: int
    num_layers: int
    hidden_size: int
    dtype: str
    sha256: str
    supports_cache: bool
    def __init__(self, model_type: _Optional[str] = ..., model_class: _Optional[str] = ..., start_layer: _Optional[int] = ..., end_layer: _Optional[int] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., dtype: _Optional[str] = ..., sha256: _Optional[str] = ..., supports_cache: _Optional[bool] = ...) -> None: ...

class Optimizer(_message.Message):
    __slots__ = ("name", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    options: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., options: _Optional[_Mapping[str, float]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("trunk", "trainable", "optimizer")
    TRUNK_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    trunk: TrunkRef
    trainable: bool
    optimizer: Optimizer
    def __init__(self, trunk: _Optional[_Union[TrunkRef, _Mapping]] = ..., trainable: _Optional[bool] = ..., optimizer: _Optional[_Union[Optimizer, _Mapping]] = ...) -> None: ...

class OpenSessionReply(_message.Message):
    __slots__ = ("session_id", "info", "idle_timeout_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    info: InfoReply
    idle_timeout_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., info: _Optional[_Union[InfoReply, _Mapping]] = ..., idle_timeout_seconds: _Optional[float] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("trunk", "session_id", "hidden_states", "attention_mask", "position_ids", "use_cache", "reset_cache", "keep_graph")
    TRUNK_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    POSITION_IDS_FIELD_NUMBER: _ClassVar[int]
    USE_CACHE_FIELD_NUMBER: _ClassVar[int]
    RESET_CACHE_FIELD_NUMBER: _ClassVar[int]
    KEEP_GRAPH_FIELD_NUMBER: _ClassVar[int]
    trunk: TrunkRef
    session_id: str
    hidden_states: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    use_cache: bool
    reset_cache: bool
    keep_graph: bool
    def __init__(self, trunk: _Optional[_Union[TrunkRef, _Mapping]] = ..., session_id: _Optional[str] = ..., hidden_states: _Optional[_Union[Tensor, _Mapping]] = ..., attention_mask: _Optional[_Union[Tensor, _Mapping]] = ..., position_ids: _Optional[_Union[Tensor, _Mapping]] = ..., use_cache: _Optional[bool] = ..., reset_cache: _Optional[bool] = ..., keep_graph: _Optional[bool] = ...) -> None: ...

class ForwardReply(_message.Message):
    __slots__ = ("hidden_states", "forward_id", "cache_length")
    HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    hidden_states: Tensor
    forward_id: int
    cache_length: int
    def __init__(self, hidden_states: _Optional[_Union[Tensor, _Mapping]] = ..., forward_id: _Optional[int] = ..., cache_length: _Optional[int] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("session_id", "forward_id", "grad_output")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    GRAD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    forward_id: int
    grad_output: Tensor
    def __init__(self, session_id: _Optional[str] = ..., forward_id: _Optional[int] = ..., grad_output: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class BackwardReply(_message.Message):
    __slots__ = ("grad_input", "optimizer_steps")
    GRAD_INPUT_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STEPS_FIELD_NUMBER: _ClassVar[int]
    grad_input: Tensor
    optimizer_steps: int
    def __init__(self, grad_input: _Optional[_Union[Tensor, _Mapping]] = ..., optimizer_steps: _Optional[int] = ...) -> None: ...

class SaveRequest(_message.Message):
    __slots__ = ("session_id", "new_name")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    new_name: str
    def __init__(self, session_id: _Optional[str] = ..., new_name: _Optional[str] = ...) -> None: ...

class SaveReply(_message.Message):
    __slots__ = ("path", "metadata_path", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    METADATA_PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    metadata_path: str
    sha256: str
    def __init__(self, path: _Optional[str] = ..., metadata_path: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...
