"""LLaDA as a vLLM model: the core's architecture on vLLM's tensor-parallel layers.

The diffusion runner does not call ``forward``: it drives this model through the per-layer interface
the core's ``forward_step`` uses (``embed``, ``rotary``, ``blocks[i].project_qkv`` / ``finish``,
``logits``, ``num_layers``, ``config``), so that the decoding algorithm exists once, in ``core/``.
Norms and RoPE are the core's math on vLLM's kernels (``plugin/norm_rope.py``); the projections
are vLLM's ``QKVParallelLinear`` / ``MergedColumnParallelLinear`` / ``RowParallelLinear`` and the
embeddings ``VocabParallelEmbedding`` / ``ParallelLMHead``, loaded from the real checkpoint names
(``model.transformer.blocks.{i}.q_proj.weight`` ...).

Paged caches: each block owns a vLLM ``Attention`` layer and a ``RefreshState`` layer, so vLLM's
KV cache manager sizes, counts and frees blocks for every canvas; the runner keeps each request's
K/V and the per-layer state a refresh needs (q, layer input) in those blocks through
``plugin/paged_cache.py``, addressed by the request's block ids, and ``forward_step`` attends over
them with the Elastic attention op. Tensor parallel: each rank holds H/tp heads of q, k, v and of
the paged caches; the runner passes ``forward_step`` a TP all-reduce for the Elastic statistics,
and ``logits`` all-gathers the vocabulary shards, so every rank decides from the same numbers.
``forward`` below is vLLM's plain entry (dummy and profiling runs) and uses the stock backend,
which is causal: it sizes memory, it is not a LLaDA forward.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.weight_utils import default_weight_loader

from ..core.config import LLaDAConfig
from ..core.model import LLaDAStack, as_dtype, as_float32
from .config import core_config
from .norm_rope import FusedRMSNorm, FusedRotary, RopeRows, rotate_qk_
from .paged_cache import RefreshState

CHECKPOINT_PREFIX = "model."  # HF LLaDA checkpoints name tensors model.transformer....
# checkpoint projection name -> (our fused parameter, its shard id)
FUSED_SHARDS = {
    "q_proj": ("qkv", "q"),
    "k_proj": ("qkv", "k"),
    "v_proj": ("qkv", "v"),
    "ff_proj": ("gate_up", 0),  # SwiGLU gate
    "up_proj": ("gate_up", 1),
}


class LLaDABlock(nn.Module):
    """One LLaDALlamaBlock: weights only, per-request state lives in the decoders."""

    def __init__(self, cfg: LLaDAConfig, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        d, hd, tp = cfg.d_model, cfg.head_dim, get_tensor_model_parallel_world_size()
        quant = vllm_config.quant_config
        self.head_dim = hd
        self.n_heads = cfg.n_heads // tp  # heads on this rank
        self.n_kv_heads = max(1, cfg.n_kv_heads // tp)
        self.attn_norm = FusedRMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = FusedRMSNorm(d, cfg.rms_norm_eps)
        self.qkv = QKVParallelLinear(
            d,
            hd,
            cfg.n_heads,
            cfg.n_kv_heads,
            bias=False,
            quant_config=quant,
            prefix=f"{prefix}.qkv",
        )
        self.attn_out = RowParallelLinear(
            cfg.n_heads * hd, d, bias=False, quant_config=quant, prefix=f"{prefix}.attn_out"
        )
        self.gate_up = MergedColumnParallelLinear(
            d, [cfg.mlp_hidden_size] * 2, bias=False, quant_config=quant, prefix=f"{prefix}.gate_up"
        )
        self.ff_out = RowParallelLinear(
            cfg.mlp_hidden_size, d, bias=False, quant_config=quant, prefix=f"{prefix}.ff_out"
        )
        self.attn = Attention(
            self.n_heads,
            hd,
            hd**-0.5,
            num_kv_heads=self.n_kv_heads,
            cache_config=vllm_config.cache_config,
            quant_config=quant,
            prefix=f"{prefix}.attn",
        )
        # q and the layer input of every position, paged with K/V (plugin/paged_cache.py): all H
        # heads, since the layer input x [d] = [H, dh] is whole on every rank (q uses H/tp of them)
        self.refresh_state = RefreshState(
            self.attn, cfg.n_heads, vllm_config, prefix=f"{prefix}.refresh_state"
        )

    def project_qkv(
        self, h: torch.Tensor, rope: RopeRows
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h: [T, d] -> q [T, H, dh] and k [T, Hkv, dh] (contiguous, RoPE applied in float32),
        v [T, Hkv, dh] (a view of the projection)."""
        qkv, _ = self.qkv(self.attn_norm(h))  # [T, (H + 2 Hkv) dh], this call's own tensor
        qkv = as_float32(qkv)
        sizes = [self.n_heads * self.head_dim] + [self.n_kv_heads * self.head_dim] * 2
        rotate_qk_(qkv, sizes[0], sizes[1], rope)
        q, k, v = as_dtype(qkv, h.dtype).split(sizes, dim=-1)
        # q and k whole: the page writes and the attention op read them as rows of heads, which
        # a view of qkv would make each of them copy again
        return (
            q.unflatten(-1, (self.n_heads, self.head_dim)).contiguous(),  # [T, H, dh]
            k.unflatten(-1, (self.n_kv_heads, self.head_dim)).contiguous(),  # [T, Hkv, dh]
            v.unflatten(-1, (self.n_kv_heads, self.head_dim)),  # [T, Hkv, dh]
        )

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual attention output then SwiGLU MLP. h: [..., T, d], attn: [..., T, H dh]."""
        out, _ = self.attn_out(attn)  # [..., T, d]
        h = h + out
        gate_up, _ = self.gate_up(self.ff_norm(h))  # [..., T, 2 mlp]
        gate, up = gate_up.chunk(2, dim=-1)
        down, _ = self.ff_out(F.silu(gate) * up)  # [..., T, d]
        return h + down

    def forward(self, h: torch.Tensor, rope: RopeRows) -> torch.Tensor:
        """vLLM's paged path (stock backend). h: [T, d] -> [T, d]."""
        q, k, v = self.project_qkv(h, rope)
        return self.finish(h, self.attn(q.flatten(-2), k.flatten(-2), v.flatten(-2)))


class LLaDAForDiffusionLM(LLaDAStack, nn.Module):
    """``LLaDAModelLM`` for vLLM: ``transformer.{wte, blocks, ln_f, ff_out}``, as the checkpoint."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        cfg = core_config(vllm_config.model_config.hf_config)
        self.config = cfg  # the core's LLaDAConfig (what forward_step and the decoders read)
        quant = vllm_config.quant_config
        base = f"{prefix}.transformer" if prefix else "transformer"
        self.transformer = nn.ModuleDict(
            {
                "wte": VocabParallelEmbedding(
                    cfg.embedding_size, cfg.d_model, quant_config=quant, prefix=f"{base}.wte"
                ),
                "blocks": nn.ModuleList(
                    LLaDABlock(cfg, vllm_config, f"{base}.blocks.{i}") for i in range(cfg.n_layers)
                ),
                "ln_f": FusedRMSNorm(cfg.d_model, cfg.rms_norm_eps),
                "ff_out": ParallelLMHead(
                    cfg.embedding_size, cfg.d_model, quant_config=quant, prefix=f"{base}.ff_out"
                ),
            }
        )
        self.logits_processor = LogitsProcessor(cfg.embedding_size)
        # every position a canvas (at most max_model_len) or one of vLLM's dummy batches (at most
        # max_num_batched_tokens rows) can hold
        positions = max(
            vllm_config.model_config.max_model_len,
            vllm_config.scheduler_config.max_num_batched_tokens,
        )
        self.rotary = FusedRotary(cfg.head_dim, cfg.rope_theta, positions)

    # -- the per-layer interface of core.forward_step (blocks, num_layers, embed: LLaDAStack) --
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h: [T, d] -> [T, V] float32 (V = embedding_size, as the core model).

        COLLECTIVE (TP > 1): ``LogitsProcessor`` all-gathers the vocabulary shards of the LM
        head (``current_platform.use_all_gather()``, true on CPU and CUDA): T * V floats per
        step. Shard r of every rank's logits is the bytes rank r computed, so all ranks hold
        identical logits and take identical commit decisions (argmax, confidence, threshold).
        """
        logits = self.logits_processor(self.transformer["ff_out"], self.transformer["ln_f"](h))
        if logits is None:  # a platform that gathers to rank 0 only: the others cannot decode
            raise RuntimeError("vllm-elastic needs the logits on every TP rank (all-gather)")
        return logits.float()

    # -- vLLM's model interface -----------------------------------------------------------------
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """input_ids, positions: [T] -> hidden states [T, d] (see the module docstring)."""
        h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # [T, d]
        rope = self.rotary(positions)
        for block in self.blocks:
            h = block(h, rope)
        return h

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Zero-width hidden states are the diffusion runner's placeholder rows (its step already
        computed the logits it needed): no LM head runs on them."""
        if hidden_states.shape[-1] == 0:
            return hidden_states.new_empty(hidden_states.shape[0], 0, dtype=torch.float32)
        return self.logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load ``model.transformer.*`` tensors, fusing q/k/v and gate/up into their shards."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            name = name.removeprefix(CHECKPOINT_PREFIX)
            parent, _, leaf = name.rpartition(".")  # ..., "weight"
            owner, _, proj = parent.rpartition(".")
            if proj in FUSED_SHARDS and owner.startswith("transformer.blocks."):
                fused, shard = FUSED_SHARDS[proj]
                target = f"{owner}.{fused}.{leaf}"
                params[target].weight_loader(params[target], tensor, shard)
            else:
                target = name
                if target not in params:
                    raise ValueError(f"unexpected LLaDA checkpoint tensor {name!r}")
                param = params[target]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(target)
        if self.config.extra.get("weight_tying") and "transformer.ff_out.weight" not in loaded:
            head, wte = params["transformer.ff_out.weight"], params["transformer.wte.weight"]
            head.weight_loader(head, wte.data)
            loaded.add("transformer.ff_out.weight")
        return loaded
