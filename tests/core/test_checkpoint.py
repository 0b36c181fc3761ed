"""HF-format round trips with the real LLaDA tensor and config names."""

from __future__ import annotations

import json

import pytest
import torch
from random_llada import random_model
from safetensors.torch import load_file

from vllm_elastic.core.checkpoint import load_model, save_model
from vllm_elastic.core.config import LLaDAConfig, llada_8b_config
from vllm_elastic.core.model import LLaDAModel

REAL_NAMES = [
    "model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
] + [
    f"model.transformer.blocks.0.{n}.weight"
    for n in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out", "attn_norm",
              "ff_norm")
]


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_round_trip_same_logits(tmp_path, n_kv_heads):
    model = random_model(seed=3, n_kv_heads=n_kv_heads)
    save_model(model, tmp_path)
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert set(REAL_NAMES) <= names
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llada" and cfg["architectures"] == ["LLaDAModelLM"]
    assert cfg["n_kv_heads"] == n_kv_heads and "canvas_length" not in cfg
    loaded = load_model(tmp_path)
    ids = torch.randint(0, 60, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_sharded_checkpoint_loads(tmp_path):
    model = random_model(seed=4)
    save_model(model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    from safetensors.torch import save_file

    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / shard))
    index = {"weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ids = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(ids), model(ids), rtol=0, atol=0)


def test_mismatched_checkpoint_is_rejected(tmp_path):
    save_model(random_model(seed=1, n_layers=2), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        load_model(tmp_path)


def test_llada_8b_config_generator(tmp_path):
    from vllm_elastic.core.config import main  # noqa: F401  (the CLI writes the same file)

    llada_8b_config().save(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for key, want in {"d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32,
                      "mlp_hidden_size": 12288, "vocab_size": 126464, "embedding_size": 126464,
                      "rope_theta": 500000.0, "mask_token_id": 126336, "eos_token_id": 126081}.items():
        assert raw[key] == want
    cfg = LLaDAConfig.from_file(tmp_path)
    with torch.device("meta"):
        model = LLaDAModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert 8.0e9 < params < 8.1e9  # LLaDA-8B: 8.02B parameters
