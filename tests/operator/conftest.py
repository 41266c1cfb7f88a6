"""Fixtures for the operator's pure unit tests: no cluster, no network."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from splitcore.config import ServerConfig
from splitlearn_operator.config import OperatorConfig

BODY: dict[str, Any] = {
    "apiVersion": "splitlearn.io/v1alpha1",
    "kind": "SplitModel",
    "metadata": {"name": "gpt2-a", "namespace": "ml", "uid": "1234-abcd", "generation": 3},
    "spec": {
        "modelType": "gpt2",
        "modelPath": "checkpoints/gpt2",
        "source": {"claimName": "models-src"},
        "storage": {"claimName": "models"},
        "splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/models"},
    },
}


@pytest.fixture
def body() -> dict[str, Any]:
    return copy.deepcopy(BODY)


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig.from_server_config(ServerConfig(auto_save_split_models=True))
