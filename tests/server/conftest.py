"""Fixtures of the server tests (helpers in ``server_helpers.py``)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
pytest.importorskip("openai")

from server_helpers import MODEL_DIR, Server

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def _serve(tmp_path_factory, flags):
    srv = Server(tmp_path_factory.mktemp("server") / "server.log", *flags)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def default_server(tmp_path_factory):
    """One server with default flags, shared by the modules that set no ``SERVER_FLAGS``."""
    yield from _serve(tmp_path_factory, ())


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """The module's server: its own when the module sets ``SERVER_FLAGS``, else the shared one."""
    flags = getattr(request.module, "SERVER_FLAGS", ())
    if flags:
        yield from _serve(tmp_path_factory, flags)
    else:
        yield request.getfixturevalue("default_server")


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def model():
    from vllm_elastic.core.checkpoint import load_model

    return load_model(MODEL_DIR)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))
