"""Fixtures of the plugin tests (helpers in ``plugin_helpers.py``)."""

from __future__ import annotations

import pytest
from plugin_helpers import write_checkpoint

from vllm_elastic.core.checkpoint import load_model


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llada-random")
    write_checkpoint(directory)
    return directory


@pytest.fixture(scope="session")
def reference_model(checkpoint):
    return load_model(checkpoint)
