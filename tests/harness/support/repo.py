"""Where things are in the repository, and the release the README installs."""

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "splitmodels.splitlearn.io.yaml"
CHART = REPO / "charts" / "splitlearn-operator"
RELEASE, RELEASE_NAMESPACE = "splitlearn-operator", "splitlearn-system"


def tool(name: str) -> str:
    """A binary the delivery tests run (helm, kubectl): on PATH or where `make tools` puts it."""
    found = shutil.which(name) or shutil.which(name, path=str(REPO / ".cache" / "tools" / "bin"))
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make tools` (`make test` does)")
    return found
