"""Load and save LLaDA checkpoints in the HF layout: config.json + (sharded) safetensors.

Tensor names are the real ones: ``model.transformer.wte.weight``,
``model.transformer.blocks.{i}.{q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out,attn_norm,ff_norm}.weight``,
``model.transformer.ln_f.weight`` and ``model.transformer.ff_out.weight`` (the LM head).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import LLaDAConfig
from .model import LLaDAModel

HF_PREFIX = "model."
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


def weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_NAME
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    single = directory / WEIGHTS_NAME
    if single.exists():
        return [single]
    found = sorted(directory.glob("*.safetensors"))
    if not found:
        raise FileNotFoundError(f"no safetensors weights in {directory}")
    return found


def load_model(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LLaDAModel:
    """Build a LLaDAModel from an HF-format LLaDA directory (any size, e.g. LLaDA-8B-Instruct)."""
    directory = Path(directory)
    cfg = LLaDAConfig.from_file(directory)
    with torch.device("meta"):
        model = LLaDAModel(cfg)
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        for name, tensor in load_file(str(path)).items():
            state[name.removeprefix(HF_PREFIX)] = tensor.to(dtype)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match the LLaDA layout: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, assign=True)
    model.rotary = model.rotary.__class__(cfg.head_dim, cfg.rope_theta)  # rebuild the non-persistent buffer
    return model.to(device).eval()


def save_model(model: LLaDAModel, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write config.json and model.safetensors with the HF tensor names."""
    directory = Path(directory)
    model.config.save(directory)
    state = {
        HF_PREFIX + name: (t.to(dtype) if dtype else t).detach().contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
