"""Pod networking for the test kubelet: a network namespace per pod, a veth pair into it.

Addresses: the pod in slot i (0..16383) gets the i-th /30 of 10.213.0.0/16; the host end of its
veth pair (in the root namespace, named `slk` + i in 4 hex digits) is .1, the pod end (`eth0`
inside the pod's namespace, with `lo` up) is .2. No default route inside: a pod reaches only
the host end, and the test process reaches `podIP:port` through the /30's route.

Names: the host link's name is the lock on its slot across runs sharing this machine (a second
`ip link add` of the same name fails; the next slot is tried). Each namespace is named
`<run tag>-<n>` and each host link carries the run tag as its alias, where the tag is
`slk-<pid>-<start time of that process>`: the leftovers of a run that died (that process is
gone) are recognised, and removed by the next run, never those of a run still alive.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
SLOTS = SUBNET.num_addresses // 4
PREFIX = "slk"
_TAG = re.compile(rf"^{PREFIX}-(\d+)-(\d+)(?:-[\w.-]+)?$")  # a run's tag, maybe suffixed
_NUMBERS = itertools.count()  # one sequence per process: several kubelets never share a name


class NetworkError(RuntimeError):
    pass


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def run_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}-{pid}-{_start_time(pid)}"


def tag_alive(tag: str) -> bool:
    """Whether the run that `tag` (or a name that starts with it) names is still alive (a tag
    not of our form: assume so)."""
    found = _TAG.match(tag)
    if found is None:
        return True
    return _start_time(int(found.group(1))) == found.group(2)


async def ip(*args: str, stdin: str | None = None, check: bool = True) -> tuple[int, str]:
    """Run `ip ARGS`; its (exit status, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        "ip", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate(stdin.encode() if stdin is not None else None)
    text = output.decode(errors="replace")
    if check and process.returncode:
        raise NetworkError(f"ip {' '.join(args)}: {text.strip()}")
    return int(process.returncode or 0), text


@dataclass
class PodNetwork:
    namespace: str  # the network namespace's name (`ip netns`)
    link: str  # the host end of the veth pair
    slot: int

    @property
    def host_ip(self) -> str:
        return str(SUBNET.network_address + 4 * self.slot + 1)

    @property
    def ip(self) -> str:
        return str(SUBNET.network_address + 4 * self.slot + 2)

    @property
    def wrapper(self) -> tuple[str, ...]:
        """The prefix that runs a command inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)


class Networks:
    """The pod networks of one run (one test process)."""

    def __init__(self) -> None:
        self.tag = run_tag()
        self.active: dict[str, PodNetwork] = {}
        self.created: set[str] = set()
        self._next_slot = 0
        self._swept = False

    async def create(self) -> PodNetwork:
        if not self._swept:
            self._swept = True
            await remove_stale()
        namespace = f"{self.tag}-{next(_NUMBERS)}"
        await ip("netns", "add", namespace)
        self.created.add(namespace)
        network: PodNetwork | None = None
        try:
            used = {network.slot for network in self.active.values()}
            for attempt in range(SLOTS):
                slot = (self._next_slot + attempt) % SLOTS
                if slot in used:
                    continue
                link = f"{PREFIX}{slot:04x}"
                code, output = await ip(
                    "link", "add", link, "type", "veth", "peer", "name", "eth0",
                    "netns", namespace, check=False,
                )  # fmt: skip
                if code == 0:
                    network = PodNetwork(namespace, link, slot)
                    break
                if "exists" not in output:
                    raise NetworkError(f"ip link add {link}: {output.strip()}")
            if network is None:
                raise NetworkError(f"no free /30 left in {SUBNET}")
            self._next_slot = (network.slot + 1) % SLOTS
            self.active[namespace] = network
            await ip("-batch", "-", stdin=(
                f"link set {network.link} alias {self.tag}\n"
                f"addr add {network.host_ip}/30 dev {network.link}\n"
                f"link set {network.link} up\n"
            ))  # fmt: skip
            await ip("-netns", namespace, "-batch", "-", stdin=(
                f"addr add {network.ip}/30 dev eth0\nlink set eth0 up\nlink set lo up\n"
            ))  # fmt: skip
        except BaseException:
            if network is not None:
                await self.remove(network)
            else:
                await ip("netns", "del", namespace, check=False)
            raise
        return network

    async def remove(self, network: PodNetwork) -> None:
        """Remove the pair (deleting one end deletes both) and the namespace."""
        self.active.pop(network.namespace, None)
        await ip("link", "del", network.link, check=False)
        await ip("netns", "del", network.namespace, check=False)

    async def close(self) -> None:
        for network in list(self.active.values()):
            await self.remove(network)

    def namespaces(self) -> list[str]:
        """The network namespaces this object created that exist now."""
        folder = Path("/run/netns")
        names = [path.name for path in folder.iterdir()] if folder.is_dir() else []
        return sorted(name for name in names if name in self.created)


async def remove_stale() -> list[str]:
    """Remove namespaces and host links left by runs that died; the names removed."""
    removed = []
    code, output = await ip("-json", "netns", "list", check=False)
    for entry in json.loads(output or "[]") if code == 0 else []:
        name = str(entry.get("name", ""))
        if name.startswith(PREFIX + "-") and not tag_alive(name):
            await ip("netns", "del", name, check=False)
            removed.append(name)
    code, output = await ip("-json", "link", "show", check=False)
    for entry in json.loads(output or "[]") if code == 0 else []:
        alias = str(entry.get("ifalias", ""))
        ours = _TAG.match(alias) and str(entry.get("ifname", "")).startswith(PREFIX)
        if ours and not tag_alive(alias):
            await ip("link", "del", entry["ifname"], check=False)
            removed.append(entry["ifname"])
    return removed
