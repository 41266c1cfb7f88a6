"""Where things are in the repository, and the release the README installs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "splitmodels.splitlearn.io.yaml"
CHART = REPO / "charts" / "splitlearn-operator"
RELEASE, RELEASE_NAMESPACE = "splitlearn-operator", "splitlearn-system"
