"""The one validation layer for files and values a user controls.

A split Job reads checkpoints, JSON and YAML that whoever uploaded them controls. Every such
read in the library, the streaming split, `verify`, `inspect` and `manifest` goes through
here, so each limit exists once:

* only regular files are opened, never blocking (a FIFO or a device would hang the reader);
* every file is read up to a size bound;
* JSON is bounded in nesting, and `NaN`, `Infinity` and out-of-range numbers are refused (they
  are not JSON for strict parsers, and would be copied into every metadata file);
* YAML is read by a safe loader that refuses aliases (the "billion laughs" shape) as well as
  every python tag;
* any value echoed in an error message is capped (`shown`) and printed without terminal
  control sequences (`printable`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

#: config.json: real ones are kilobytes; each metadata file and safetensors header embeds it.
MAX_CONFIG_BYTES = 4 * 2**20
#: Index files and metadata (which embed the config).
MAX_JSON_BYTES = 16 * 2**20
#: Deeper than any real config, index or header; far below Python's recursion limit.
MAX_JSON_DEPTH = 64
#: A ModelConfig, ServerConfig or SplitModel manifest.
MAX_YAML_BYTES = 2**20
#: The longest value an error message repeats.
SHOWN_CHARS = 80

ErrorType = Callable[[str], Exception]


class InputError(ValueError):
    """A file or value given to splitcore is unusable; the message names it. Exit code 2."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` for an error message: one line, never longer than `limit` characters.

    Containers are cut before they are rendered, so a huge (or alias-expanded) value costs
    no more than its first items.
    """
    return clip(_bounded_repr(value, limit), limit)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked with `...`."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: Any, limit: int) -> str:
    if isinstance(value, dict):
        items = []
        for index, (key, item) in enumerate(value.items()):
            if index == 8:
                items.append("...")
                break
            items.append(f"{_bounded_repr(key, limit)}: {_bounded_repr(item, limit)}")
        return "{" + ", ".join(items)[: limit + 1] + "}"
    if isinstance(value, list | tuple):
        parts = [_bounded_repr(item, limit) for item in value[:8]]
        if len(value) > 8:
            parts.append("...")
        return "[" + ", ".join(parts)[: limit + 1] + "]"
    if isinstance(value, str):
        return repr(value[: limit + 1])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    return repr(value)


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x1b`), safe to print on a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def open_regular_file(path: Path, error: ErrorType = InputError) -> int:
    """A read-only descriptor of `path`, which must be a regular file.

    It is opened without blocking, so a FIFO or a device is refused instead of waited on; a
    missing file raises `FileNotFoundError`, anything else unusable `error(message)`.
    """
    try:
        mode = path.stat().st_mode  # a socket cannot even be opened: name what it is
        if not stat.S_ISREG(mode):
            raise error(f"{path} is {_kind(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        missing = FileNotFoundError(f"{path} does not exist")
        missing.filename = str(path)
        raise missing from None
    except OSError as failure:
        if failure.errno == errno.ELOOP:
            raise error(f"{path} is a symbolic link loop, not a file") from None
        raise error(f"{path} cannot be read: {failure.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path} is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def read_regular_file(path: Path, max_bytes: int, error: ErrorType = InputError) -> bytes:
    """The bytes of regular file `path`, refused (`error`) past `max_bytes`."""
    fd = open_regular_file(path, error)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as failure:
        raise error(f"{path} cannot be read: {failure.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{path} is larger than {max_bytes} bytes, more than such a file can be")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:SHOWN_CHARS]} is out of range")
    return value


def parse_json(
    data: bytes | str, where: str, error: ErrorType = InputError, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Strict JSON: no `NaN`/`Infinity`, finite floats only, nested at most `max_depth` deep."""
    try:
        document = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise error(f"{where} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as failure:  # JSONDecodeError is a ValueError
        raise error(f"{where} is not valid JSON: {clip(str(failure), 200)}") from None
    if _depth(document) > max_depth:
        raise error(f"{where} is not valid JSON here: nested more than {max_depth} levels deep")
    return document


def _depth(document: Any) -> int:
    """Nesting depth, found without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return deepest


def load_json(
    path: Path,
    error: ErrorType = InputError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """A JSON file, read as `read_regular_file` and parsed as `parse_json`."""
    return parse_json(read_regular_file(path, max_bytes, error), str(path), error, max_depth)


def dump_json(document: Any, **options: Any) -> str:
    """JSON that strict parsers accept: `NaN`/`Infinity` raise instead of being written."""
    return json.dumps(document, allow_nan=False, **options)


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases: each node is built once, so size stays bounded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(
    text: str, where: str, error: ErrorType = InputError, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """One YAML document, read safely (no aliases, no python tags), at most `max_depth` deep."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise error(f"{where}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as failure:
        message = " ".join(str(failure).split())
        raise error(f"{where}: not valid YAML: {clip(message, 300)}") from None
    if _depth(document) > max_depth:
        raise error(f"{where}: nested more than {max_depth} levels deep")
    return document


def load_yaml(path: Path, error: ErrorType = InputError, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """A YAML file: a regular file of at most `max_bytes`, in UTF-8, parsed by `parse_yaml`."""
    data = read_regular_file(path, max_bytes, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not valid YAML: not UTF-8 text") from None
    return parse_yaml(text, str(path), error)


def refusal(error: Exception) -> str:
    """Why a loader (torch's weights-only unpickler) refused a file, as one short line,
    without its advice to load the file unsafely."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split(". Please use", 1)[0]
        text = text.split("Check the documentation", 1)[0]
    elif "weights_only" in text:
        return f"{type(error).__name__}: not a plain file of tensors"
    return clip(printable(" ".join(text.split())), 200) or type(error).__name__
