from __future__ import annotations

import pytest
from random_llada import random_model

from vllm_elastic.core.model import LLaDAModel


@pytest.fixture(scope="session")
def model() -> LLaDAModel:
    return random_model()
