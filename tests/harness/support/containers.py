"""What the test kubelet does for any container, whoever owns its pod (a Job, a Deployment).

* volumes: a folder per PersistentVolumeClaim (`Host.volume`), fresh folders for emptyDirs, a
  small tmpfs for a claim in `Host.small_volumes`, files written from a ConfigMap or a Secret;
  a missing object raises `MountError` (the pod stays Pending, as on a real node);
* the container's env: `value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef` (the downward
  API) and `envFrom`; a missing object or key raises `ConfigError`
  (CreateContainerConfigError);
* the shell script run under `unshare --mount` that binds each source at its mountPath (read
  only where asked) and then execs the command;
* the container's `terminated` state once its process has exited;
* `Mountpoints`: the mount targets (say /models) made on the host for pods, shared safely
  with other test runs on the same machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kmock import resource

from support.kubernetes import RealisticKubernetes, now
from support.network import run_tag, tag_alive
from support.repo import REPO

PVCS = resource("", "v1", "persistentvolumeclaims")
SECRETS = resource("", "v1", "secrets")
CONFIGMAPS = resource("", "v1", "configmaps")
TERMINATION_LIMIT = 4096
LOG_TAIL = 2048  # FallbackToLogsOnError: the end of the log, as the kubelet's 2048 bytes
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


class Host(Protocol):
    """The node's side of a pod: the API, claim folders, mount targets it created."""

    api: RealisticKubernetes
    root: Path
    small_volumes: dict[str, int]
    delay_seconds: float

    def volume(self, namespace: str, claim: str) -> Path: ...

    def mountpoint(self, path: str, is_file: bool = False) -> None: ...


class MountError(Exception):
    """A volume cannot be set up (a ConfigMap, a Secret or a key is missing)."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')
        self.volume = volume


class UnschedulableError(Exception):
    """A PersistentVolumeClaim the pod needs does not exist: no node may take the pod."""


class ConfigError(Exception):
    """The container's env refers to a missing object or key (CreateContainerConfigError)."""


@dataclass
class Source:
    """What a volume is on the node: a folder, or None for a tmpfs of `size` bytes."""

    path: Path | None
    read_only: bool = False
    size: int | None = None
    writable_group: bool = True  # fsGroup applies (claims and emptyDirs)


@dataclass
class Bind:
    source: str | None  # None: a fresh tmpfs of `size` bytes
    target: str
    read_only: bool
    size: int | None = None
    inside_tmpfs: bool = False  # its target lies in an earlier tmpfs mount: made there first

    @property
    def is_file(self) -> bool:
        return self.source is not None and Path(self.source).is_file()


# ------------------------------------------------------------------------------ mountpoints

REGISTRY = Path("/run/splitlearn-harness/mountpoints")
_KUBELETS = itertools.count()


class Mountpoints:
    """Mount targets must exist on the host (a pod binds onto them in its own mount namespace):
    the missing ones are made, and removed once no run uses them any more.

    Several test runs may share the machine, and removing a folder detaches the mounts on it in
    every namespace (a running pod would lose its volume), so each target is registered under
    `REGISTRY` (a folder per target: a `created` mark when a harness made it, a file per run that
    uses it, named by its run tag); a run's `release` removes its files and then the targets no
    live run uses. Folders that existed before any harness are never removed."""

    def __init__(self, registry: Path = REGISTRY) -> None:
        self.registry = registry
        self.tag = f"{run_tag()}-{next(_KUBELETS)}"  # one per kubelet, dead with its process
        self.used: set[Path] = set()  # registered: made by a harness
        self._seen: set[str] = set()

    @contextlib.contextmanager
    def _locked(self) -> Any:
        self.registry.mkdir(parents=True, exist_ok=True)
        with (self.registry / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _entry(self, path: Path) -> Path:
        return self.registry / str(path).strip("/").replace("%", "%25").replace("/", "%2F")

    def ensure(self, path: str, is_file: bool = False) -> None:
        target = Path(path)
        if path in self._seen and target.exists():
            return
        self._seen.add(path)
        with self._locked():
            chain = [p for p in [target, *target.parents] if p != p.parent]
            for place in reversed(chain):  # the outermost first
                entry = self._entry(place)
                if not place.exists():
                    if place == target and is_file:
                        place.touch()
                    else:
                        place.mkdir()
                    entry.mkdir(exist_ok=True)
                    (entry / "created").touch()
                if entry.is_dir():
                    (entry / self.tag).touch()
                    self.used.add(place)

    def release(self) -> None:
        """Forget this run's targets; remove those the harness made that no live run uses."""
        if not self.used:
            return
        with self._locked():
            for place in sorted(self.used, key=lambda p: len(p.parts), reverse=True):
                entry = self._entry(place)
                with contextlib.suppress(FileNotFoundError):
                    (entry / self.tag).unlink()
                users = list(entry.iterdir()) if entry.is_dir() else []
                for user in users:
                    if user.name != "created" and not tag_alive(user.name):
                        user.unlink()
                if entry.is_dir() and not any(f.name != "created" for f in entry.iterdir()):
                    with contextlib.suppress(OSError):
                        place.unlink() if place.is_file() else place.rmdir()
                    shutil.rmtree(entry, ignore_errors=True)
            self.used.clear()
            self._seen.clear()


# ------------------------------------------------------------------------------ objects


def _decoded(obj: dict[str, Any], binary_key: str) -> dict[str, bytes]:
    """Every key of a ConfigMap or Secret with its bytes (Secret `data` and ConfigMap
    `binaryData` are base64; `stringData`, which the emulator keeps as written, and ConfigMap
    `data` are text)."""
    values: dict[str, bytes] = {}
    for key, value in (obj.get(binary_key) or {}).items():
        values[key] = base64.b64decode(value)
    for text_key in ("data", "stringData"):
        if text_key == binary_key:
            continue
        for key, value in (obj.get(text_key) or {}).items():
            values[key] = str(value).encode()
    return values


def secret_values(api: RealisticKubernetes, namespace: str, name: str) -> dict[str, bytes] | None:
    secret = api.get(SECRETS, namespace, name)
    return None if secret is None else _decoded(secret, "data")


def configmap_values(
    api: RealisticKubernetes, namespace: str, name: str
) -> dict[str, bytes] | None:
    configmap = api.get(CONFIGMAPS, namespace, name)
    return None if configmap is None else _decoded(configmap, "binaryData")


# ------------------------------------------------------------------------------ volumes


def mounted_volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod's volumes that some container mounts, by name."""
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    wanted = {
        mount["name"]
        for container in spec.get("containers", [])
        for mount in container.get("volumeMounts", [])
    }
    return {name: volume for name, volume in volumes.items() if name in wanted}


def check_claims(api: RealisticKubernetes, spec: dict[str, Any], namespace: str) -> None:
    """The scheduler's check: every claim the pod mounts exists."""
    for volume in mounted_volumes(spec).values():
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if api.get(PVCS, namespace, claim) is None:
                raise UnschedulableError(f'persistentvolumeclaim "{claim}" not found')


def _projected(
    volume: dict[str, Any], kind: str, values: dict[str, bytes] | None, directory: Path
) -> Source:
    """Write a ConfigMap's or Secret's keys as files (its `items` only, if given)."""
    source = volume["configMap" if kind == "configmap" else "secret"]
    name = source.get("name") if kind == "configmap" else source.get("secretName")
    if values is None:
        if not source.get("optional"):
            raise MountError(volume["name"], f'{kind} "{name}" not found')
        values = {}
    mode = int(source.get("defaultMode", 0o644))
    items = source.get("items") or [{"key": key, "path": key} for key in sorted(values)]
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            raise MountError(
                volume["name"], f"{kind} references non-existent {kind} key: {item['key']}"
            )
        path = directory / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(values[item["key"]])
        path.chmod(int(item.get("mode", mode)))
    directory.chmod(0o755)
    return Source(directory, read_only=True, writable_group=False)


def volume_sources(
    host: Host, pod_dir: Path, spec: dict[str, Any], namespace: str
) -> dict[str, Source]:
    """The node's folder (or tmpfs) for each volume the pod mounts; raises `MountError`
    or `UnschedulableError`."""
    sources: dict[str, Source] = {}
    for name, volume in mounted_volumes(spec).items():
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if host.api.get(PVCS, namespace, claim) is None:
                raise UnschedulableError(f'persistentvolumeclaim "{claim}" not found')
            read_only = bool(volume["persistentVolumeClaim"].get("readOnly"))
            if claim in host.small_volumes:
                sources[name] = Source(None, read_only, size=host.small_volumes[claim])
            else:
                sources[name] = Source(host.volume(namespace, claim), read_only)
        elif "configMap" in volume:
            values = configmap_values(host.api, namespace, volume["configMap"].get("name", ""))
            sources[name] = _projected(volume, "configmap", values, pod_dir / "volumes" / name)
        elif "secret" in volume:
            values = secret_values(host.api, namespace, volume["secret"].get("secretName", ""))
            sources[name] = _projected(volume, "secret", values, pod_dir / "volumes" / name)
        else:  # emptyDir (and anything else: an empty folder)
            folder = pod_dir / "emptydir" / name
            folder.mkdir(parents=True, exist_ok=True)
            sources[name] = Source(folder)
    return sources


def container_binds(
    host: Host,
    spec: dict[str, Any],
    container: dict[str, Any],
    sources: dict[str, Source],
    termination_file: Path,
) -> list[Bind]:
    """The container's mounts, its termination message file last-but-sorted."""
    fs_group = spec.get("securityContext", {}).get("fsGroup")
    binds: list[Bind] = []
    for mount in container.get("volumeMounts", []):
        source = sources[mount["name"]]
        target = mount["mountPath"]
        read_only = bool(mount.get("readOnly")) or source.read_only
        writable = source.path is not None and source.writable_group and not read_only
        if writable and fs_group is not None and source.path is not None:
            os.chown(source.path, -1, int(fs_group))
            source.path.chmod(0o2775)
        path = source.path
        if path is not None and mount.get("subPath"):
            path = path / mount["subPath"]
            if not path.exists():
                path.mkdir(parents=True)
        host.mountpoint(target, is_file=path is not None and path.is_file())
        binds.append(Bind(str(path) if path else None, target, read_only, source.size))
    termination = container.get("terminationMessagePath", DEFAULT_TERMINATION_PATH)
    host.mountpoint(termination, is_file=True)
    termination_file.parent.mkdir(parents=True, exist_ok=True)
    termination_file.write_bytes(b"")  # a fresh file for each container instance
    binds.append(Bind(str(termination_file), termination, False))
    # A mount over a folder that holds our sources (say /tmp) must come last; else a folder's
    # mount before the mounts inside it, whose targets are made in its source (as the kubelet
    # makes nested mount points in a ConfigMap's or Secret's volume).
    root = str(host.root)
    binds.sort(key=lambda b: (root.startswith(b.target.rstrip("/") + "/"), b.target.count("/")))
    for index, bind in enumerate(binds):
        for outer in binds[:index]:
            prefix = outer.target.rstrip("/") + "/"
            if not bind.target.startswith(prefix):
                continue
            if outer.source is None:
                bind.inside_tmpfs = True
            elif Path(outer.source).is_dir():
                inner = Path(outer.source) / bind.target[len(prefix) :]
                if bind.is_file and not inner.exists():
                    inner.parent.mkdir(parents=True, exist_ok=True)
                    inner.touch()
                elif not inner.exists():
                    inner.mkdir(parents=True)
    return binds


def mount_script(binds: list[Bind], delay_seconds: float = 0.0) -> str:
    """The shell script run in the container's mount namespace: mounts, then `exec "$@"`."""
    lines = ["set -e"]
    for bind in binds:
        quoted = shlex.quote(bind.target)
        if bind.inside_tmpfs:
            lines.append(f"touch {quoted}" if bind.is_file else f"mkdir -p {quoted}")
        mount = (
            f"mount -t tmpfs -o size={bind.size} tmpfs {quoted}"
            if bind.source is None
            else f"mount --bind {shlex.quote(bind.source)} {quoted}"
        )
        if str(REPO).startswith(bind.target.rstrip("/") + "/"):
            # The mount hides the repository (and its .venv, the interpreter the command
            # runs with): keep a handle on it as the working directory, put it back inside.
            keep = shlex.quote(str(REPO))
            lines += [f"cd {keep}", mount, f"mkdir -p {keep}",
                      f"mount --no-canonicalize --bind . {keep}", "cd /"]  # fmt: skip
        else:
            lines.append(mount)
        if bind.read_only:
            lines.append(f"mount -o remount,bind,ro {quoted}")
    if delay_seconds:
        lines.append(f"sleep {delay_seconds}")
    lines.append('exec "$@"')
    return "\n".join(lines)


# ------------------------------------------------------------------------------ env


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(NAME)` expansion (`$$` is a `$`; an unknown name stays as written)."""

    def replace(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        return env.get(found.group(1), found.group(0))

    return _REFERENCE.sub(replace, text)


def _field(pod: dict[str, Any] | None, path: str) -> str:
    value: Any = pod or {}
    for part in path.replace("']", "").replace("['", ".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def container_env(
    api: RealisticKubernetes,
    container: dict[str, Any],
    namespace: str,
    pod: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The container's env as the kubelet resolves it; raises `ConfigError` if an object or
    key it names is missing (and not optional)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            reference, kind = source["secretRef"], "secret"
            values = secret_values(api, namespace, reference["name"])
        else:
            reference, kind = source.get("configMapRef", {}), "configmap"
            values = configmap_values(api, namespace, reference.get("name", ""))
        if values is None:
            if reference.get("optional"):
                continue
            raise ConfigError(f'{kind} "{reference.get("name")}" not found')
        env.update({prefix + key: value.decode() for key, value in values.items()})
    for item in container.get("env", []):
        if "valueFrom" not in item:
            env[item["name"]] = expand(str(item.get("value", "")), env)
            continue
        value_from = item["valueFrom"]
        if "fieldRef" in value_from:
            env[item["name"]] = _field(pod, value_from["fieldRef"]["fieldPath"])
            continue
        if "secretKeyRef" in value_from:
            reference, kind, title = value_from["secretKeyRef"], "secret", "Secret"
            values = secret_values(api, namespace, reference["name"])
        elif "configMapKeyRef" in value_from:
            reference, kind, title = value_from["configMapKeyRef"], "configmap", "ConfigMap"
            values = configmap_values(api, namespace, reference["name"])
        else:
            continue  # resourceFieldRef: not emulated
        if values is None or reference["key"] not in values:
            if reference.get("optional"):
                continue
            if values is None:
                raise ConfigError(f'{kind} "{reference["name"]}" not found')
            raise ConfigError(
                f"couldn't find key {reference['key']} in {title} {namespace}/{reference['name']}"
            )
        env[item["name"]] = values[reference["key"]].decode()
    return env


# ------------------------------------------------------------------------------ processes


def base_env() -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def command_of(container: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """command + args, `$(NAME)`s expanded, the first resolved on the test interpreter's PATH."""
    command = [
        expand(str(part), env or {})
        for part in [*container.get("command", []), *container.get("args", [])]
    ]
    binary = shutil.which(command[0], path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return [binary or command[0], *command[1:]]


async def spawn(
    script: str,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    wrapper: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """Run `command` after `script` in a private mount namespace (inside `wrapper`, say
    `ip netns exec NAME`), in a session of its own (its process group is killed as one)."""
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            *wrapper, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "pod", *command,
            stdout=output, stderr=asyncio.subprocess.STDOUT,
            env=env, start_new_session=True, cwd=cwd,
        )  # fmt: skip


def kill_group(process: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def exit_code_of(returncode: int) -> int:
    """A shell's view: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def terminated_state(
    container: dict[str, Any],
    exit_code: int,
    reason: str | None,
    termination_file: Path,
    log: Path,
    log_offset: int = 0,
    started_at: str | None = None,
) -> dict[str, Any]:
    """`state.terminated` of a container whose process ended: its termination message, else
    (FallbackToLogsOnError, failed) the end of what it wrote since `log_offset`."""
    message = termination_file.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
    policy = container.get("terminationMessagePolicy", "File")
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        with log.open("rb") as handle:
            handle.seek(log_offset)
            message = handle.read()[-LOG_TAIL:].decode(errors="replace")
    finished = now()
    terminated = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at or finished,
        "finishedAt": finished,
    }
    if message:
        terminated["message"] = message
    return terminated
