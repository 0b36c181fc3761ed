"""LLaDA model configuration, read from and written to the HF ``config.json`` field names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Special token ids of the released LLaDA-8B / LLaDA-1.5 checkpoints (their config.json).
LLADA_8B_MASK_ID = 126336
LLADA_8B_EOS_ID = 126081
LLADA_8B_BOS_ID = 126080
LLADA_8B_EOT_ID = 126348


@dataclass(slots=True)
class LLaDAConfig:
    """The subset of the LLaDA ``config.json`` that decides the architecture."""

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int = 126464
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_sequence_length: int = 4096
    mask_token_id: int = LLADA_8B_MASK_ID
    eos_token_id: int = LLADA_8B_EOS_ID
    pad_token_id: int = LLADA_8B_EOS_ID
    extra: dict = field(default_factory=dict)  # every other config.json field, kept for round trips

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.embedding_size < self.vocab_size:
            raise ValueError("embedding_size must be >= vocab_size")

    @classmethod
    def from_dict(cls, raw: dict) -> "LLaDAConfig":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: raw[k] for k in known if k in raw and raw[k] is not None}
        if "n_kv_heads" not in kwargs:
            kwargs["n_kv_heads"] = kwargs.get("n_heads", cls.n_heads)
        if "embedding_size" not in kwargs and "vocab_size" in kwargs:
            kwargs["embedding_size"] = kwargs["vocab_size"]
        cfg = cls(**kwargs, extra={k: v for k, v in raw.items() if k not in known})
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "LLaDAConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict:
        raw = asdict(self)
        extra = raw.pop("extra")
        base = {
            "model_type": "llada",
            "architectures": ["LLaDAModelLM"],
            "block_type": "llama",
            "activation_type": "silu",
            "layer_norm_type": "rms",
            "rope": True,
            "rope_full_precision": True,
            "attention_layer_norm": False,
            "include_bias": False,
            "include_qkv_bias": False,
            "weight_tying": False,
            "flash_attention": False,
        }
        return {**base, **extra, **raw}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def llada_8b_config() -> LLaDAConfig:
    """The LLaDA-8B-Instruct architecture (GSAI-ML/LLaDA-8B-Instruct config.json values)."""
    return LLaDAConfig(
        extra={"bos_token_id": LLADA_8B_BOS_ID, "torch_dtype": "bfloat16", "mlp_ratio": 4}
    )


def main() -> None:
    """``python -m vllm_elastic.core.config OUT_DIR`` writes the real LLaDA-8B config.json."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir")
    llada_8b_config().save(parser.parse_args().out_dir)


if __name__ == "__main__":
    main()
