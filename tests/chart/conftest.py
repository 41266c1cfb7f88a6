"""Fixtures for the delivery tests: the real helm binary (`make tools` installs it)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from support.repo import CHART, RELEASE, tool
from support.repo import RELEASE_NAMESPACE as NAMESPACE


@pytest.fixture(scope="session")
def helm() -> str:
    return tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return tool("kubectl")


Renderer = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    """`render(values, *flags)`: the chart's objects as `helm template` renders them."""

    def run(values: dict[str, Any] | None = None, *flags: str) -> list[dict[str, Any]]:
        values_file = tmp_path_factory.mktemp("values") / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        done = subprocess.run(
            [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
             "--values", str(values_file), *flags],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return run
