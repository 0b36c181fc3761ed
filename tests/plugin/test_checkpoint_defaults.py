"""The plugin reads a checkpoint's decoding defaults the way vLLM reads its sampling defaults: from
the model's generation config (``--generation-config auto``), from another folder, or not at all
(``vllm``), with ``additional_config`` over them. The engine tests' checkpoint carries a block
(``plugin_helpers.CHECKPOINT_DEFAULTS``), so every parity test also checks that requests get it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm")

from plugin_helpers import CHECKPOINT_DEFAULTS  # noqa: E402

from vllm_elastic.core.settings import DecodeSettings  # noqa: E402


def model_config(checkpoint, **kwargs):
    from vllm.config import ModelConfig
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # registers LLaDAModelLM, as an engine start does
    return ModelConfig(model=str(checkpoint), skip_tokenizer_init=True, dtype="float32", **kwargs)


def test_generation_config_sources(checkpoint, tmp_path):
    from vllm_elastic.plugin import settings

    checkpoints = DecodeSettings.from_dict(CHECKPOINT_DEFAULTS)
    auto = model_config(checkpoint)
    assert settings.engine_settings(None, auto) == checkpoints
    engine_wide = {"elastic": {"block_length": 16, "gamma": 0.8}}
    assert settings.engine_settings(engine_wide, auto) == checkpoints.replace(
        block_length=16, gamma=0.8
    )
    # --generation-config vllm: vLLM's neutral defaults, so the authors' here
    assert settings.engine_settings(None, model_config(checkpoint, generation_config="vllm")) == (
        DecodeSettings()
    )
    # --generation-config DIR: that folder's file instead of the model's
    (tmp_path / "generation_config.json").write_text(json.dumps({"elastic": {"gamma": 0.97}}))
    folder = model_config(checkpoint, generation_config=str(tmp_path))
    assert settings.engine_settings(None, folder) == DecodeSettings(gamma=0.97)


def test_a_bad_block_fails_the_engine_config(checkpoint, tmp_path):
    from vllm_elastic.plugin import settings

    (tmp_path / "generation_config.json").write_text(json.dumps({"elastic": {"gen_length": 64}}))
    folder = model_config(checkpoint, generation_config=str(tmp_path))
    with pytest.raises(ValueError, match="set per request"):
        settings.engine_settings(None, folder)
