"""The operator spells a split one way: Job name, files, conflict key and cleanup command."""

from __future__ import annotations

import copy

import pytest

from splitlearn_operator import builders
from splitlearn_operator.spec import resolve_spec


@pytest.mark.parametrize("legacy", ["02-10", " 2-10\n", "002-0010"])
def test_a_legacy_spelling_resolves_to_the_canonical_spec(body, config, legacy):
    """An object stored while an older CRD admitted other spellings acts on the same files."""
    canonical = resolve_spec(body, config)
    other = copy.deepcopy(body)
    other["spec"]["splitStorageConfig"]["splitConfig"] = legacy
    resolved = resolve_spec(other, config)
    assert resolved == canonical
    assert resolved.split_config == "2-10"
    assert resolved.spec_hash == canonical.spec_hash  # same Job name, same conflict key
    assert resolved.component_paths() == canonical.component_paths()
    command = builders.build_cleanup_job(other, resolved, config)["spec"]["template"]["spec"][
        "containers"
    ][0]["command"]
    assert command[command.index("--split") + 1] == "2-10"
