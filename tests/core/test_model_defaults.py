"""A checkpoint's own decoding defaults: the "elastic" block of its generation_config.json,
under the command line's flags (the plugin reads it through vLLM:
tests/plugin/test_checkpoint_defaults.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from vllm_elastic.core.settings import DecodeSettings, model_defaults
from vllm_elastic.eval.cli import add_decoder_args, settings_from_args


def write_config(directory, config) -> None:
    (directory / "generation_config.json").write_text(json.dumps(config))


def test_a_checkpoint_without_the_block_gets_the_authors_defaults(tmp_path):
    assert model_defaults(tmp_path) == DecodeSettings()  # no file
    assert model_defaults(tmp_path / "not-a-directory") == DecodeSettings()
    write_config(tmp_path, {"eos_token_id": 3})  # a file without the block
    assert model_defaults(tmp_path) == DecodeSettings()


def test_the_block_sets_the_checkpoints_defaults(tmp_path):
    block = {"gamma": 0.97, "cosine": "key", "refresh_mode": "deferred", "refresh_start": "first"}
    write_config(tmp_path, {"eos_token_id": 3, "elastic": block})
    got = model_defaults(tmp_path)
    assert (got.gamma, got.cosine, got.refresh_mode, got.refresh_start) == (
        0.97, "key", "deferred", "first"
    )
    assert got.replace(**{k: getattr(DecodeSettings(), k) for k in block}) == DecodeSettings()


@pytest.mark.parametrize(
    "block, match",
    [
        ({"gen_length": 512}, "set per request"),
        ({"temperature": 0.5}, "set per request"),
        ({"seed": 1, "gamma": 0.9}, "set per request"),
        ({"gamma": 1.5}, "gamma must be in"),
        ({"refresh_start": "first"}, "needs refresh_mode 'deferred'"),
        ({"no_such_knob": 1}, "unknown setting"),
        ([0.9], "must be a dict"),
    ],
)
def test_a_bad_block_names_the_file(tmp_path, block, match):
    write_config(tmp_path, {"elastic": block})
    with pytest.raises(ValueError, match=match) as err:
        model_defaults(tmp_path)
    assert "generation_config.json" in str(err.value)


def test_flags_override_the_checkpoint(tmp_path):
    write_config(tmp_path, {"elastic": {"gamma": 0.97, "window": 8, "refresh_mode": "deferred"}})
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    add_decoder_args(parser)
    args = parser.parse_args(["--model", str(tmp_path), "--gamma", "0.8"])
    got = settings_from_args(args, "elastic", 512)
    assert (got.gamma, got.window, got.refresh_mode, got.gen_length) == (0.8, 8, "deferred", 512)
    plain = parser.parse_args(["--model", str(tmp_path / "elsewhere")])
    assert settings_from_args(plain, "elastic", 512) == DecodeSettings(gen_length=512)
