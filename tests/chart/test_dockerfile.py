"""The image: hadolint-clean, multi-stage, non-root, caches on mounted emptyDirs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support.repo import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None
    done = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_and_the_final_stage_has_nothing_to_compile_with():
    stages = [line for line in DOCKERFILE.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    final = DOCKERFILE.split(stages[1], 1)[1]
    assert "COPY --from=build /opt/splitlearn /opt/splitlearn" in final
    for compiler in ("gcc", "build-essential", "apt-get install", "g++", "make "):
        assert compiler not in final
    assert "slim" in stages[1] or "${PYTHON_IMAGE}" in stages[1]


def test_runs_as_a_numeric_non_root_user_with_writable_caches_on_mounts():
    final = DOCKERFILE.split("FROM ${PYTHON_IMAGE}\n", 1)[1]
    assert "USER 10001:10001" in final
    for env in (
        "HF_HOME=/cache/huggingface",
        "TORCH_HOME=/cache/torch",
        "TMPDIR=/tmp",
        "HOME=/tmp",
    ):
        assert env in final  # /cache and /tmp are the emptyDirs every pod mounts
    for label in ("title", "source", "version", "licenses", "description"):
        assert f"org.opencontainers.image.{label}=" in final


def test_cpu_torch_is_pinned_as_in_ci():
    assert (
        'pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in DOCKERFILE
    )
    assert "torch==2.13.0" in (REPO / "constraints" / "ci.txt").read_text()


def test_make_image_builds_this_dockerfile_with_docker_or_podman(tmp_path):
    """`make image` runs `<docker|podman> build -t IMAGE .`; without either it says so."""
    done = subprocess.run(
        ["make", "-s", "image", "IMAGE=splitlearn-operator:dev", "CONTAINER_TOOL=echo"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "build -t splitlearn-operator:dev .\n")
    done = subprocess.run(
        ["make", "-s", "image", "CONTAINER_TOOL="], cwd=REPO, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "make image needs docker or podman" in done.stderr
