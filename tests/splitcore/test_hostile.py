"""Generated hostile inputs: every bad file, value, name and timing ends in a clear error.

Each class of issue 10 is a generator, not a list of cases: seeded random mutations of a real
checkpoint's safetensors header, `config.json` and index; YAML for `manifest`; model names;
non-regular files where a file is expected; and timings (a source changed or truncated during
the split, a second writer, a writer killed at a random tensor). Every case runs `splitcore`
in a subprocess under a 2 GiB address-space cap and a timeout, and must end with the expected
exit code, one line `error (<Reason>): ...` on stderr, no traceback, no temp file and no
partial file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splitcore.atomic import StagedFile, output_lock, temp_prefix
from splitcore.split import split_checkpoint
from splitcore.storage import COMPONENTS

SEED = 10
MEMORY_CAP = 2 * 2**30
TIMEOUT_S = 60
CASES_PER_FAMILY = 14
#: Reasons a permanent, bad-input failure of `split` may carry (exit code 2).
INVALID = ("InvalidCheckpoint", "InvalidInput", "InvalidSplitPoints", "UnsupportedModel")
SPLIT_ARGS = ("split", "--split", "2-10", "--quiet", "--model-name", "gpt2")


@dataclass
class Case:
    """One generated run of `splitcore` and what it must end with."""

    name: str
    workdir: Path
    argv: list[str]
    code: int
    reasons: tuple[str, ...] = INVALID
    mentions: str | None = None  # text the error message must contain (a path, a key)
    script: str | None = None  # a python program run instead of the CLI (timing cases)
    verdict: bool = False  # `verify`: the verdict is on stdout, stderr stays empty
    finals_allowed: bool = False  # finished components may stay (checked for integrity)
    after: Callable[[Case], None] | None = None  # extra checks once the run ended
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # a rival's
    kept: tuple[Path, ...] = ()  # temp files a live rival holds (they must stay)

    @property
    def storage(self) -> Path:
        return self.workdir / "models"


class CaseRandom(random.Random):
    """The generator of one case: seeded by its family and index, so runs repeat exactly."""

    def __init__(self, family: str, index: int) -> None:
        super().__init__(f"{SEED}-{family}-{index}")
        self.index = index

    def kind(self, kinds: list[str]) -> str:
        """Kinds in turn, so every family's cases cover each of its kinds."""
        return kinds[self.index % len(kinds)]


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _run(case: Case) -> str | None:
    """Run one case; None if it ended as it must, else what went wrong."""
    with case.held:
        return _run_and_check(case)


def _run_and_check(case: Case) -> str | None:
    command = (
        [sys.executable, "-P", "-c", case.script]
        if case.script
        else [sys.executable, "-P", "-m", "splitcore", *case.argv]
    )
    try:
        done = subprocess.run(
            command,
            cwd=case.workdir,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            preexec_fn=_limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{case.name}: no result within {TIMEOUT_S} s"
    problems = []
    if done.returncode != case.code:
        problems.append(f"exit {done.returncode}, expected {case.code}")
    if "Traceback" in done.stderr:
        problems.append("a traceback")
    lines = done.stderr.strip().splitlines()
    if case.verdict:
        message = done.stdout
        if lines or "Verdict: FAILED" not in done.stdout:
            problems.append("verify did not report a failed verdict on stdout alone")
    elif case.code > 0:
        message = lines[0] if lines else ""
        reason = message.removeprefix("error (").split(")", 1)[0]
        if len(lines) != 1 or not message.startswith("error (") or reason not in case.reasons:
            problems.append(f"not one line 'error (<{'|'.join(case.reasons)}>): ...'")
    else:
        message = done.stdout
    if case.mentions is not None and case.mentions not in message:
        problems.append(f"the message does not name {case.mentions!r}")
    if not problems and case.after is not None:
        try:
            case.after(case)
        except AssertionError as error:
            problems.append(str(error))
    problems += _leftovers(case)
    if problems:
        return f"{case.name}: {'; '.join(problems)}\n  stderr: {done.stderr[-600:]!r}"
    return None


def _leftovers(case: Case) -> list[str]:
    """No temp file anywhere; no file under a final name unless finished (and intact)."""
    problems = []
    temps = [p for p in case.workdir.rglob("*.tmp") if p not in case.kept]
    if temps:
        problems.append(f"temp files left: {[str(p) for p in temps]}")
    if case.storage.is_dir() and case.code != 0:
        finals = [p for p in case.storage.rglob("*") if p.is_file() and p.name[0] != "."]
        if finals and not case.finals_allowed:
            problems.append(f"files under final names: {[p.name for p in finals]}")
        for metadata_path in [p for p in finals if p.name.endswith("_metadata.json")]:
            weights = next(metadata_path.parent.glob(metadata_path.name[:-14] + ".*"))
            recorded = json.loads(metadata_path.read_text())["sha256"]
            if hashlib.sha256(weights.read_bytes()).hexdigest() != recorded:
                problems.append(f"{weights.name} does not match its metadata's sha256")
    return problems


def _check_family(cases: list[Case]) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [failure for failure in pool.map(_run, cases) if failure]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- helpers


def _checkpoint(base: Path, workdir: Path) -> Path:
    workdir.mkdir(parents=True)
    return Path(shutil.copytree(base, workdir / "gpt2"))


def _split_case(name: str, workdir: Path, code: int = 2, **options: object) -> Case:
    argv = [*SPLIT_ARGS, "--model", "gpt2", "--storage", "models"]
    return Case(name, workdir, argv, code, **options)  # type: ignore[arg-type]


def _raw(document: object, tokens: dict[str, str]) -> str:
    """JSON text of `document` with placeholder strings replaced by raw tokens (NaN, 1e400)."""
    text = json.dumps(document)
    for placeholder, token in tokens.items():
        text = text.replace(json.dumps(placeholder), token)
    return text


def _nested(rng: random.Random, low: int = 100, high: int = 200_000) -> str:
    depth = rng.randint(low, high)
    return "[" * depth + "]" * depth


RAW_NUMBERS = ("1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1.5", "-1", "1" * 5000)


# --------------------------------------------------------------------- safetensors headers


def _read_safetensors(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _header_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    checkpoint = _checkpoint(base, workdir)
    path = checkpoint / "model.safetensors"
    header, data = _read_safetensors(path)
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry = header[name]
    tokens: dict[str, str] = {}
    kind = rng.kind(
        ["shape", "offsets", "dtype", "entry", "header", "deep", "metadata", "length", "cut"]
    )
    prefix_size: int | None = None
    if kind == "shape":
        dim = rng.randrange(len(entry["shape"]))
        choice = rng.choice(["float", "string", "bool", "raw", "negative", "drop"])
        if choice == "raw":
            entry["shape"][dim] = "@raw"
            tokens["@raw"] = rng.choice(RAW_NUMBERS)
        elif choice == "drop":
            entry["shape"].pop(dim)
            entry["shape"].append(entry["shape"][0] if entry["shape"] else 2)
            entry["shape"].append(3)
        else:
            value = entry["shape"][dim]
            entry["shape"][dim] = {
                "float": float(value),
                "string": str(value),
                "bool": True,
                "negative": -value,
            }[choice]
    elif kind == "offsets":
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice(
            [
                [end, begin],
                [begin + 4, end + 4],
                [float(begin), end],
                [begin, end, end],
                [begin],
                [begin, end + rng.randint(1, 10**6)],
                ["0", end],
            ]
        )
    elif kind == "dtype":
        entry["dtype"] = rng.choice(["C64", "complex64", "F128", "", 5, None, ["F32"], "f32"])
    elif kind == "entry":
        header[name] = rng.choice([1, "x", [], None, True])
    elif kind == "header":
        header = rng.choice([[], "header", 3, None])  # type: ignore[assignment]
    elif kind == "deep":
        entry["extra"] = "@deep"
        tokens["@deep"] = _nested(rng)
    elif kind == "metadata":
        header["__metadata__"] = rng.choice([{"format": 1}, [], "pt", {"a": None}])
    elif kind == "length":
        prefix_size = rng.choice([0, 2**63, 2**40, len(data) + 10**6])
    encoded = _raw(header, tokens).encode()
    if kind == "cut":
        data = data[: -rng.randint(1, 500)]
    prefix = struct.pack("<Q", len(encoded) if prefix_size is None else prefix_size)
    path.write_bytes(prefix + encoded + data)
    return _split_case(
        f"header-{kind}", workdir, reasons=("InvalidCheckpoint",), mentions=path.name
    )


# ------------------------------------------------------------------------- config.json


def _config_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    checkpoint = _checkpoint(base, workdir)
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    tokens: dict[str, str] = {}
    kind = rng.kind(
        ["count", "size", "constant", "deep", "large", "not-object", "bytes", "model-type"]
    )
    text: str | bytes
    if kind == "count":
        config["n_layer"] = rng.choice([10**9, 10**18, 2**70, 0, -1, True, 12.0, "12", None, 13])
    elif kind == "size":
        key, values = rng.choice(
            [
                ("n_embd", [16, 64, 10**9, 0, -32]),
                ("n_head", [3, 5, 7, 0, -4]),
                ("n_inner", [64, 256, 7, 10**9]),
                ("vocab_size", [95, 97, 10**9, 1]),
                ("n_positions", [32, 128, 10**10, 1]),
            ]
        )
        config[key] = rng.choice(values)
    elif kind == "constant":
        config[rng.choice(["layer_norm_epsilon", "new_key", "n_layer"])] = "@raw"
        tokens["@raw"] = rng.choice(RAW_NUMBERS[:5])
    elif kind == "deep":
        config["nested"] = "@deep"
        tokens["@deep"] = _nested(rng)
    elif kind == "large":
        config["padding"] = "x" * rng.randint(4 * 2**20, 6 * 2**20)
    elif kind == "not-object":
        config = rng.choice([[], "config", 3, None])  # type: ignore[assignment]
    elif kind == "model-type":
        config["model_type"] = rng.choice(["gpt-neo", "llama", "bert", 5, None, ["gpt2"]])
    if kind == "bytes":
        text = rng.choice([b"", b"\xff\xfe{}", b'{"n_layer": 12', b"{" * 3])
        path.write_bytes(text)
    else:
        path.write_text(_raw(config, tokens))
    return _split_case(f"config-{kind}", workdir)


# ------------------------------------------------------------------------------ indexes


def _index_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    checkpoint = _checkpoint(base, workdir)
    header, _ = _read_safetensors(checkpoint / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    weight_map: object = dict.fromkeys(names, "model.safetensors")
    kind = rng.kind(["map-type", "value", "unknown-tensor", "deep", "constant", "missing-key"])
    tokens: dict[str, str] = {}
    if kind == "map-type":
        weight_map = rng.choice([[], "model.safetensors", 3, None])
    elif kind == "value":
        assert isinstance(weight_map, dict)
        weight_map[rng.choice(names)] = rng.choice(
            [
                3,
                ["model.safetensors"],
                None,
                "",
                "../gpt2/model.safetensors",
                "/etc/passwd",
                "missing.safetensors",
                "sub/model.safetensors",
                ".",
            ]
        )
    elif kind == "unknown-tensor":
        assert isinstance(weight_map, dict)
        weight_map[f"transformer.h.{rng.randint(0, 99)}.ghost.weight"] = "model.safetensors"
    elif kind == "deep":
        weight_map = "@deep"
        tokens["@deep"] = _nested(rng)
    elif kind == "constant":
        weight_map = "@raw"
        tokens["@raw"] = rng.choice(RAW_NUMBERS[:5])
    document = {"metadata": {}, "weight_map": weight_map}
    if kind == "missing-key":
        document = {"metadata": {}}
    index = checkpoint / "model.safetensors.index.json"
    index.write_text(_raw(document, tokens))
    return _split_case(f"index-{kind}", workdir, reasons=("InvalidCheckpoint",))


# --------------------------------------------------------------------------------- YAML


def _laughs(rng: random.Random) -> str:
    width, depth = rng.randint(5, 10), rng.randint(6, 12)
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\nmodel_id: *a{depth - 1}\n"


def _yaml_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    workdir.mkdir(parents=True)
    kind = rng.kind(
        ["laughs", "alias", "python", "not-mapping", "deep", "large", "bytes", "types", "kinds"]
    )
    text: str | bytes
    if kind == "laughs":
        text = _laughs(rng)
    elif kind == "alias":
        text = "model_id: &id m\nmodel_path: *id\n"
    elif kind == "python":
        tag = rng.choice(
            [
                "!!python/object/apply:os.system ['true']",
                "!!python/name:os.system",
                "!!python/tuple [1]",
                "!!python/object/new:dict {}",
                "!!binary aGk=",
            ]
        )
        text = f"model_id: {tag}\nmodel_path: /m\n"
    elif kind == "not-mapping":
        text = rng.choice(["- a\n- b\n", "just text\n", "42\n", "", "~\n", "--- {}\n--- {}\n"])
    elif kind == "deep":
        text = "model_id: " + _nested(rng, 70, 100_000) + "\n"
    elif kind == "large":
        text = "model_id: m\nmodel_path: /m\nconfig: {pad: " + "x" * (2**20) + "}\n"
    elif kind == "bytes":
        text = rng.choice([b"model_id: \xff\xfe\n", b"\x00\x01\x02", b"model_id: [\n"])
    elif kind == "types":
        text = rng.choice(
            [
                "model_id: [1, 2]\nmodel_path: /m\n",
                "model_id: m\nmodel_path: {a: 1}\n",
                "model_id: m\nmodel_path: /m\nsplit_storage_config: [1]\n",
                "model_id: m\nmodel_path: /m\nsplit_storage_config: {split_config: 1e400}\n",
                f"model_id: m\nmodel_path: /m\nunknown_{'k' * 5000}: 1\n",
            ]
        )
    else:
        text = rng.choice(
            [
                "kind: SplitModel\nspec: [1]\n",
                "kind: SplitModel\nmetadata: text\n",
                "kind: SplitModel\nspec: {splitStorageConfig: 3}\n",
            ]
        )
    path = workdir / "model_config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return Case(
        f"yaml-{kind}",
        workdir,
        ["manifest", str(path), "--storage-claim", "models"],
        2,
        reasons=("InvalidInput",),
    )


# ------------------------------------------------------------------------------- names

NAME_PIECES = ("\n", "/", "..", " ", "\t", "\x1b[31m", "名", "$", "*", "\\", ":", "'")


def _name_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    _checkpoint(base, workdir)
    stem = rng.choice(["gpt2", "model", "a.b", "x-y_z"])
    kind = rng.kind(["piece", "leading", "empty", "too-long", "long-but-fits"])
    if kind == "piece":
        piece = rng.choice(NAME_PIECES)
        name = rng.choice([stem + piece, piece + stem, stem[:2] + piece + stem[2:]])
    elif kind == "leading":
        name = "." + stem
    elif kind == "empty":
        name = ""
    else:
        length = rng.randint(230, 400) if kind == "too-long" else rng.randint(150, 229)
        name = (stem * 400)[:length]
    argv = ["split", "--split", "2-10", "--quiet", "--model", "gpt2", "--storage", "models"]
    argv.append(f"--model-name={name}")
    if kind == "long-but-fits":

        def six_files(case: Case) -> None:
            files = sorted(p.name for p in case.storage.rglob("*") if p.is_file())
            assert len(files) == 6 and all(f.startswith(name) for f in files), files

        return Case(f"name-{kind}", workdir, argv, 0, after=six_files)

    def nothing_outside(case: Case) -> None:
        assert sorted(p.name for p in case.workdir.iterdir()) == ["gpt2"], "wrote files"

    return Case(f"name-{kind}", workdir, argv, 2, reasons=("InvalidInput",), after=nothing_outside)


# -------------------------------------------------------------------------- file types


def _make_unusable(path: Path, kind: str) -> None:
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "socket":
        short = Path(tempfile.mkdtemp(dir="/tmp")) / "s"  # AF_UNIX paths are short
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(short))
        short.rename(path)
        short.parent.rmdir()


def _file_type_case(rng: CaseRandom, workdir: Path, base: Path, split: Path) -> Case:
    kinds = ["fifo", "directory", "loop", "device", "socket"]
    places = ["config", "weights", "index", "inspect", "manifest", "verify-metadata"]
    kind, where = kinds[rng.index % len(kinds)], places[rng.index // len(kinds) % len(places)]
    checkpoint = _checkpoint(base, workdir)
    name = f"filetype-{kind}-{where}"
    if where in ("config", "weights", "index"):
        target = (
            checkpoint
            / {
                "config": "config.json",
                "weights": "model.safetensors",
                "index": "model.safetensors.index.json",
            }[where]
        )
        _make_unusable(target, kind)
        return _split_case(name, workdir, mentions=target.name)
    if where == "manifest":
        target = workdir / "model_config.yaml"
        _make_unusable(target, kind)
        return Case(name, workdir, ["manifest", str(target)], 2, ("InvalidInput",), target.name)
    storage = Path(shutil.copytree(split, workdir / "models"))
    component = rng.choice(COMPONENTS)
    target = storage / component / f"gpt2_2-10_{component}_metadata.json"
    _make_unusable(target, kind)
    if where == "inspect":
        argv = ["inspect", str(rng.choice([storage, target]))]
        reasons = ("InvalidInput", "SourceNotFound")  # a directory is a folder without metadata
        return Case(name, workdir, argv, 2, reasons, target.name, finals_allowed=True)
    argv = ["verify", "--storage", "models", "--model-name", "gpt2", "--split", "2-10"]
    return Case(name, workdir, argv, 2, mentions=target.name, verdict=True, finals_allowed=True)


# ------------------------------------------------------------------------------ timings

_MUTATE = """
import os, sys
import splitcore.formats as formats
from splitcore.cli import main
calls, real = [0], formats.read_span
def read_then_change(span, offset, length):
    calls[0] += 1
    if calls[0] == {call}:
        {change}
    return real(span, offset, length)
formats.read_span = read_then_change
sys.exit(main({argv!r}))
"""

_CHANGES = {
    "truncate": "os.truncate(span.path, {size})",
    "overwrite": "fd = os.open(span.path, os.O_WRONLY); os.pwrite(fd, b'\\x7f' * 64, {at}); "
    "os.close(fd)",
    "append": "open(span.path, 'ab').write(b'\\0' * 64)",
    "kill": "os.kill(os.getpid(), 9)",
}


def _timing_case(rng: CaseRandom, workdir: Path, base: Path) -> Case:
    checkpoint = _checkpoint(base, workdir)
    source = checkpoint / "model.safetensors"
    size = source.stat().st_size
    argv = [*SPLIT_ARGS, "--model", "gpt2", "--storage", "models", "--format"]
    argv.append(rng.choice(["pt", "safetensors"]))
    kind = rng.kind(["truncate", "overwrite", "append", "kill", "rival", "live-temp"])
    if kind in _CHANGES:
        change = _CHANGES[kind].format(size=rng.randint(0, size - 1), at=rng.randint(8, size - 64))
        script = _MUTATE.format(call=rng.randint(1, 140), change=change, argv=argv)
        if kind == "kill":
            return Case(
                f"timing-{kind}", workdir, argv, -signal.SIGKILL, script=script,
                finals_allowed=True, after=_a_rerun_finishes_cleanly,
            )  # fmt: skip
        return Case(
            f"timing-{kind}", workdir, argv, 1, ("SourceChanged",), script=script,
            finals_allowed=True,
        )  # fmt: skip
    storage = workdir / "models"
    storage.mkdir()
    case = Case(f"timing-{kind}", workdir, argv, 0)
    if kind == "rival":  # another writer of the same files holds their lock
        case.held.enter_context(output_lock(storage, "gpt2_2-10"))
        case.code, case.reasons = 1, ("OutputLocked",)
        return case
    # A live writer's temp (locked) survives the cleanup; dead writers' temps do not.
    component = rng.choice(COMPONENTS)
    live = StagedFile(storage / component / f"gpt2_2-10_{component}.{argv[-1]}")
    case.held.callback(live.abort)
    case.kept = (live.temp,)
    dead = []
    for _ in range(rng.randint(1, 3)):
        component = rng.choice(COMPONENTS)
        name = rng.choice([f"gpt2_2-10_{component}.pt", f"gpt2_2-10_{component}_metadata.json"])
        dead.append(storage / component / f"{temp_prefix(name)}{rng.randrange(10**8)}.tmp")
        dead[-1].parent.mkdir(exist_ok=True)
        dead[-1].write_bytes(b"partial")

    def only_the_live_temp_stays(case: Case) -> None:
        assert live.temp.exists(), "a live writer's temp file was removed"
        assert not any(path.exists() for path in dead), "a dead writer's temp file stayed"

    case.after = only_the_live_temp_stays
    return case


def _a_rerun_finishes_cleanly(case: Case) -> None:
    done = subprocess.run(
        [sys.executable, "-P", "-m", "splitcore", *case.argv],
        cwd=case.workdir,
        capture_output=True,
        check=False,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(str(p.relative_to(case.storage)) for p in case.storage.rglob("*") if p.is_file())
    assert len(files) == 6 and not any("/." in f or f.startswith(".") for f in files), files


# -------------------------------------------------------------------------------- tests


def _generate(
    family: str, tmp_path: Path, make: Callable[[CaseRandom, Path], Case], count: int
) -> list[Case]:
    return [
        make(CaseRandom(family, index), tmp_path / f"{family}-{index}") for index in range(count)
    ]


@pytest.fixture(scope="module")
def split_output(gpt2_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = tmp_path_factory.mktemp("split") / "models"
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, storage, out=io.StringIO())
    return storage


FAMILIES: dict[str, Callable[..., Case]] = {
    "header": _header_case,
    "config": _config_case,
    "index": _index_case,
    "yaml": _yaml_case,
    "name": _name_case,
    "timing": _timing_case,
}


@pytest.mark.parametrize("generator", list(FAMILIES))
def test_generated_hostile_inputs_end_in_one_clear_error(generator, gpt2_checkpoint, tmp_path):
    make = FAMILIES[generator]
    cases = _generate(
        generator, tmp_path, lambda rng, work: make(rng, work, gpt2_checkpoint), CASES_PER_FAMILY
    )
    _check_family(cases)


def test_non_regular_files_are_refused_by_path_never_waited_on(
    gpt2_checkpoint, split_output, tmp_path
):
    cases = _generate(
        "filetype",
        tmp_path,
        lambda rng, work: _file_type_case(rng, work, gpt2_checkpoint, split_output),
        30,  # every kind of file in every place
    )
    _check_family(cases)
