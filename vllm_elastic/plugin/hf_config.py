"""The HF config class of ``model_type: llada``, registered with ``transformers.AutoConfig``.

LLaDA checkpoints ship modelling code for ``trust_remote_code``; this class reads their
``config.json`` without it. LLaDA's native names (``d_model``, ``n_heads`` ...) are kept, and the
generic names vLLM reads (``hidden_size``, ``num_attention_heads`` ...) are aliases of them. It
imports no vllm, so the core-side tools (eval, bench, demo) register it too: without a registered
``llada`` type, ``AutoTokenizer.from_pretrained`` parses ``config.json`` with the generic class and
transformers warns "You are using a model of type `llada` to instantiate a model of type ``".
"""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig

from ..core.config import LLADA_8B_EOS_ID, LLADA_8B_MASK_ID

MODEL_TYPE = "llada"


class LLaDAHFConfig(PreTrainedConfig):
    model_type = MODEL_TYPE
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = None,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        max_sequence_length: int = 4096,
        mask_token_id: int = LLADA_8B_MASK_ID,
        eos_token_id: int = LLADA_8B_EOS_ID,
        pad_token_id: int | None = LLADA_8B_EOS_ID,
        weight_tying: bool = False,
        **kwargs,
    ) -> None:
        self.d_model, self.n_heads, self.n_layers = d_model, n_heads, n_layers
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.mlp_hidden_size, self.vocab_size = mlp_hidden_size, vocab_size
        self.embedding_size = vocab_size if embedding_size is None else embedding_size
        self.rope_theta, self.rms_norm_eps = rope_theta, rms_norm_eps
        self.max_sequence_length, self.mask_token_id = max_sequence_length, mask_token_id
        self.weight_tying = weight_tying
        kwargs.pop("tie_word_embeddings", None)
        super().__init__(
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=weight_tying,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def register_hf_config() -> None:
    """Make ``AutoConfig`` (and so ``AutoTokenizer``) know ``model_type: llada``; idempotent."""
    AutoConfig.register(MODEL_TYPE, LLaDAHFConfig, exist_ok=True)
