"""The real operator, as a subprocess (`python -m splitlearn_operator`), for e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    return path


@dataclass
class OperatorProcess:
    """One operator process; `kill()` is SIGKILL, `stop()` a graceful SIGTERM."""

    directory: Path
    kubeconfig: Path
    namespaces: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    port: int = 0
    metrics_port: int = 0
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.directory / f"operator-{self.starts}.log"

    def logs(self) -> str:
        return "".join(
            (self.directory / f"operator-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    async def start(self) -> None:
        self.starts += 1
        self.port, self.metrics_port = free_port(), free_port()
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            "metrics_port": self.metrics_port,
            "health_check_interval": 1.0,
            "model_storage_dir": "/models",
            "auto_save_split_models": True,
            **self.settings,
        }
        config["config"] = {
            "queue_retry_seconds": 0.5,
            "wait_retry_seconds": 1.0,
            "resync_seconds": 1.0,
            "watch_server_timeout_seconds": 30,
            "watch_client_timeout_seconds": 40,
            **self.settings.get("config", {}),
        }
        config_path = self.directory / "server_config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        scope = [arg for ns in self.namespaces for arg in ("--namespace", ns)] or [
            "--all-namespaces"
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "splitlearn_operator", "--config", str(config_path),
            *scope,
            stdout=self.log.open("wb"), stderr=asyncio.subprocess.STDOUT, env=env,
            cwd=self.directory,
        )  # fmt: skip
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30) -> None:
        deadline = asyncio.get_event_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while asyncio.get_event_loop().time() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(f"the operator exited:\n{self.logs()[-4000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"the operator never became healthy:\n{self.logs()[-4000:]}")

    async def kill(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                await self.kill()

    def rss_bytes(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus endpoint on 127.0.0.1, by (name, sorted labels)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
