"""Independent reference decoders: plain loops over one sequence, written from the authors' code.

Nothing here comes from ``vllm_elastic.core`` except the model's weights and layer modules (norms,
projections, embedding, LM head). Attention (explicit softmax of q k^T / sqrt(dh), GQA by repeat),
RoPE, the caches, the commit rules and the block schedules are written again here, so that a test
comparing them with ``core.generate`` checks the project's decoders against a second reading:

- ``fastdllm_reference``: NVlabs Fast-dLLM ``llada/generate.py`` (``generate``,
  ``generate_with_prefix_cache``, ``generate_with_dual_cache``), confidence-threshold commit;
- ``llada_reference``: ML-GSAI LLaDA ``generate.py`` (``low_confidence`` or ``random`` remasking,
  greedy or Gumbel-noised tokens);
- ``oracle_elastic_reference.elastic_reference``: Elastic-Cache, on the ``RefLLaDA`` below.

Each returns a ``Trace``: the canvas and the counters the project reports (NFE, rows computed over
layers, per-layer refresh counts), plus the closest calls of its decisions, so that a test can check
that float noise between two correct implementations cannot flip one.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

NO_REFRESH = -1  # refresh start of a step that refreshes nothing


@dataclass
class Trace:
    """What one reference decode did. ``refreshes[l]``: forwards after the first in which layer l
    recomputed every position; ``rows_computed``: rows computed, summed over layers and forwards."""

    canvas: list[int]
    prompt_len: int
    num_layers: int
    nfe: int = 0
    rows_computed: int = 0
    refreshes: list[int] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)  # every drift test's similarity
    similarity_layers: list[int] = field(default_factory=list)  # the layer of each of them
    refresh_starts: list[int] = field(default_factory=list)  # per forward: first full layer or -1
    query_rows: list[int] = field(default_factory=list)  # per forward: rows computed at layer 0
    tracked: list[list[int]] = field(default_factory=list)  # per forward: Elastic's tracked keys
    # closest calls (smallest margins) of the decisions a float-level difference could flip
    gamma_margin: float = math.inf  # |similarity - gamma| over every drift test
    threshold_margin: float = math.inf  # |conf - threshold| over candidates of threshold commits
    argmax_margin: float = math.inf  # top-1 minus top-2 probability of every committed position
    rank_margin: float = math.inf  # relative gap at the cut of every top-k choice
    max_commit: int = 0  # most tokens one step committed (> 1: parallel decoding ran)

    def __post_init__(self) -> None:
        self.refreshes = self.refreshes or [0] * self.num_layers

    def count_forward(self, rows_per_layer: list[int], start: int) -> None:
        if self.nfe > 0:
            for layer in range(max(start, 0), self.num_layers):
                self.refreshes[layer] += 1
        self.nfe += 1
        self.rows_computed += sum(rows_per_layer)
        self.refresh_starts.append(start if start < self.num_layers else NO_REFRESH)
        self.query_rows.append(rows_per_layer[0])

    def topk(self, score: torch.Tensor, k: int) -> list[int]:
        """The k largest entries' indices; notes the gap between the k-th and the next one."""
        order = torch.sort(score.double(), descending=True)
        k = min(k, score.numel())
        if k < score.numel():
            top, nxt = order.values[k - 1].item(), order.values[k].item()
            self.rank_margin = min(self.rank_margin, (top - nxt) / max(abs(top), 1e-30))
        return order.indices[:k].tolist()

    def output(self, mask_id: int, eos_id: int) -> tuple[list[int], bool]:
        """``DecodeResult``'s view: generated ids before the first EOS (a mask ends them too)."""
        out = []
        for t in self.canvas[self.prompt_len :]:
            if t == eos_id:
                return out, True
            if t == mask_id:
                break
            out.append(t)
        return out, False


class RefLLaDA:
    """LLaDA's forward from the block weights, one sequence at a time, with explicit attention."""

    def __init__(self, model) -> None:
        cfg = model.config
        self.blocks = list(model.transformer["blocks"])
        self.wte, self.ln_f = model.transformer["wte"], model.transformer["ln_f"]
        self.head = model.transformer["ff_out"]
        self.num_layers, self.d_model = cfg.n_layers, cfg.d_model
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        half = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        self.inv_freq = 1.0 / (cfg.rope_theta**half)  # [dh/2]
        self.mask_id, self.eos_id = cfg.mask_token_id, cfg.eos_token_id

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.wte(ids)  # [T, d]

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate-half RoPE at absolute positions. x: [T, heads, dh]."""
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # [T, dh/2]
        cos = torch.cat([angles, angles], -1).cos()[:, None, :]  # [T, 1, dh]
        sin = torch.cat([angles, angles], -1).sin()[:, None, :]
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def qkv(self, layer: int, h: torch.Tensor, positions: torch.Tensor):
        """h: [T, d] -> q [T, H, dh], k and v [T, Hkv, dh], RoPE applied to q and k."""
        b = self.blocks[layer]
        a = b.attn_norm(h)
        t = h.shape[0]
        q = b.q_proj(a).view(t, self.n_heads, self.head_dim)
        k = b.k_proj(a).view(t, self.n_kv_heads, self.head_dim)
        v = b.v_proj(a).view(t, self.n_kv_heads, self.head_dim)
        return self.rope(q, positions), self.rope(k, positions), v

    def probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(dh)), the key heads repeated for GQA. q: [T, H, dh], k: [N, Hkv, dh]
        -> [H, T, N]."""
        groups = self.n_heads // self.n_kv_heads
        kh = k.transpose(0, 1).repeat_interleave(groups, dim=0)  # [H, N, dh]
        scores = q.transpose(0, 1) @ kh.transpose(1, 2) / math.sqrt(self.head_dim)  # [H, T, N]
        return torch.softmax(scores, dim=-1)

    def attend(self, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """probs: [H, T, N], v: [N, Hkv, dh] -> [T, H * dh]."""
        groups = self.n_heads // self.n_kv_heads
        vh = v.transpose(0, 1).repeat_interleave(groups, dim=0)  # [H, N, dh]
        return (probs @ vh).transpose(0, 1).reshape(probs.shape[1], -1)

    def finish(self, layer: int, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual attention output, then the SwiGLU MLP."""
        b = self.blocks[layer]
        h = h + b.attn_out(attn)
        n = b.ff_norm(h)
        return h + b.ff_out(F.silu(b.ff_proj(n)) * b.up_proj(n))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(h)).float()  # [T, V]

    def full_forward(self, ids: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        """No-cache bidirectional forward, [N] -> logits [N, V]; each layer's (k, v) go to kv."""
        pos = torch.arange(ids.numel())
        h = self.embed(ids)
        for layer in range(self.num_layers):
            q, k, v = self.qkv(layer, h, pos)
            if kv is not None:
                kv[layer] = (k, v)
            h = self.finish(layer, h, self.attend(self.probs(q, k), v))
        return self.logits(h)


def confidence(trace: Trace, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max softmax probability (float64) and its token per row; notes the argmax gap."""
    p = torch.softmax(logits.double(), dim=-1)  # [R, V]
    top2 = p.topk(2, dim=-1).values  # [R, 2]
    if p.shape[0]:
        trace.argmax_margin = min(trace.argmax_margin, (top2[:, 0] - top2[:, 1]).min().item())
    return top2[:, 0], p.argmax(dim=-1)


def commit_choice(
    trace: Trace, conf: torch.Tensor, threshold: float, tokens_per_step: int | None
) -> list[int]:
    """Indices committed: the ``tokens_per_step`` most confident, or every conf >= threshold and
    always the most confident one (Fast-dLLM's rule, the Elastic-Cache commit)."""
    if tokens_per_step is not None:
        keep = sorted(trace.topk(conf, tokens_per_step))
        trace.max_commit = max(trace.max_commit, len(keep))
        return keep
    best = int(conf.argmax())
    keep = []
    for i, c in enumerate(conf.tolist()):
        if i != best:
            trace.threshold_margin = min(trace.threshold_margin, abs(c - threshold))
        if i == best or c >= threshold:
            keep.append(i)
    trace.max_commit = max(trace.max_commit, len(keep))
    return keep


def answered(x: list[int], prompt_len: int, mask_id: int, eos_id: int) -> bool:
    """Every generated position up to and including the first EOS is committed."""
    gen = x[prompt_len:]
    return eos_id in gen and mask_id not in gen[: gen.index(eos_id)]


# ---------------------------------------------------------------------------------------------
# Fast-dLLM (NVlabs/Fast-dLLM llada/generate.py: generate, generate_with_prefix_cache,
# generate_with_dual_cache) with the confidence-threshold commit


def _fastdllm_cached_step(ref, x, lo, hi, cache, kv) -> tuple[torch.Tensor, int]:
    """One in-block step against the K/V of the block's first forward. ``prefix``: positions
    lo..N-1 are recomputed, keys < lo come from the cache; ``dual``: only the block lo..hi-1 is
    recomputed, every other key comes from the cache. Returns logits [hi - lo, V], rows."""
    n = x.numel()
    end = n if cache == "prefix" else hi
    pos = torch.arange(lo, end)
    h = ref.embed(x[lo:end])
    for layer in range(ref.num_layers):
        q, k, v = ref.qkv(layer, h, pos)
        k_cached, v_cached = kv[layer]
        keys = torch.cat([k_cached[:lo], k, k_cached[end:]])  # [N, Hkv, dh]
        values = torch.cat([v_cached[:lo], v, v_cached[end:]])
        h = ref.finish(layer, h, ref.attend(ref.probs(q, keys), values))
    return ref.logits(h[: hi - lo]), end - lo


def fastdllm_reference(
    model,
    prompt: list[int],
    *,
    gen_length: int,
    block_length: int = 32,
    threshold: float = 0.9,
    cache: str = "prefix",
    tokens_per_step: int | None = None,
    early_stop: bool = False,
) -> Trace:
    """Fast-dLLM decode of one prompt: blocks left to right; each block starts with a full forward
    (which refreshes the cache and commits), then steps until the block has no mask."""
    ref = RefLLaDA(model)
    p_len, layers = len(prompt), ref.num_layers
    x = torch.tensor(prompt + [ref.mask_id] * gen_length)
    n = x.numel()
    trace = Trace(x.tolist(), p_len, layers)
    kv: list = [None] * layers
    for lo in range(p_len, n, block_length):
        hi, first = lo + block_length, True
        while bool((x[lo:hi] == ref.mask_id).any()):
            if cache == "none" or first:
                logits, rows = ref.full_forward(x, kv)[lo:hi], n
            else:
                logits, rows = _fastdllm_cached_step(ref, x, lo, hi, cache, kv)
            trace.count_forward([rows] * layers, 0 if rows == n else layers)
            first = False
            is_masked = (x[lo:hi] == ref.mask_id).nonzero().squeeze(-1)  # block offsets
            conf, tokens = confidence(trace, logits[is_masked])
            keep = commit_choice(trace, conf, threshold, tokens_per_step)
            x[lo + is_masked[keep]] = tokens[keep]
            trace.canvas = x.tolist()
            if early_stop and answered(trace.canvas, p_len, ref.mask_id, ref.eos_id):
                return trace
    return trace


# ---------------------------------------------------------------------------------------------
# LLaDA's reference sampler (ML-GSAI/LLaDA generate.py), temperature 0


def llada_reference(
    model,
    prompt: list[int],
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    remasking: str = "low_confidence",
    temperature: float = 0.0,
    seed: int = 0,
    early_stop: bool = False,
) -> Trace:
    """Semi-autoregressive blocks, ``steps // num_blocks`` full forwards per block, each committing
    the ``num_transfer_tokens`` best masked positions of the block; the others stay masked.

    The project's random stream (not LLaDA's, which draws from the global generator over the whole
    canvas): ``torch.Generator().manual_seed(seed)``; each step draws first the Gumbel noise of
    the block's masked positions (ascending) and every vocabulary entry (float64, only when
    temperature > 0), then the ``random`` remasking priority of those positions (float64). The
    other positions cannot be committed in the step, so they draw nothing."""
    ref = RefLLaDA(model)
    p_len = len(prompt)
    x = torch.tensor(prompt + [ref.mask_id] * gen_length)
    trace = Trace(x.tolist(), p_len, ref.num_layers)
    per_block = steps // (gen_length // block_length)
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, gen_length, block_length):
        hi = lo + block_length
        m = int((x[p_len + lo : p_len + hi] == ref.mask_id).sum())
        schedule = [m // per_block + (1 if i < m % per_block else 0) for i in range(per_block)]
        for count in schedule:
            logits = ref.full_forward(x)[p_len:]  # [G, V]
            trace.count_forward([x.numel()] * ref.num_layers, 0)
            gen = x[p_len:]  # view
            candidates = [i for i in range(hi) if int(gen[i]) == ref.mask_id]
            x0, conf = _llada_tokens(trace, logits, candidates, temperature, generator)
            if remasking == "random":
                conf = torch.rand(len(candidates), dtype=torch.float64, generator=generator)
            chosen = trace.topk(conf, count) if count else []
            for c in chosen:
                gen[candidates[c]] = x0[c]
            trace.canvas = x.tolist()
            if early_stop and answered(trace.canvas, p_len, ref.mask_id, ref.eos_id):
                return trace
    return trace


def _llada_tokens(trace, logits, candidates, temperature, generator):
    """x0 of the candidate rows: argmax of Gumbel-noised logits, ``exp(logits) / (-log U)^T``
    (greedy at T = 0), and its clean probability softmax(logits)[x0]."""
    if temperature == 0:
        conf, x0 = confidence(trace, logits[candidates])
        return x0, conf
    rows = logits[candidates].double()  # [R, V]
    noise = torch.rand(rows.shape, dtype=torch.float64, generator=generator)  # [R, V]
    noisy = rows.exp() / (-torch.log(noise)) ** temperature
    top2 = noisy.topk(2, dim=-1).values  # [R, 2]
    gap = ((top2[:, 0] - top2[:, 1]) / top2[:, 0]).min().item()
    trace.argmax_margin = min(trace.argmax_margin, gap)
    x0 = noisy.argmax(dim=-1)
    conf = torch.softmax(logits[candidates].double(), -1).gather(-1, x0[:, None])[:, 0]
    return x0, conf


def small_model(
    seed: int = 0,
    n_kv_heads: int = 2,
    n_layers: int = 4,
    eos_id: int | None = None,
    head_scale: float = 4.0,
    attn_scale: float = 3.0,
):
    """A random float32 LLaDA (d 64, 4 heads, GQA by default) with random_llada's mask id.

    The default init mixes little across positions (every mask decodes alike); ``attn_scale``
    sharpens attention and strengthens its output, ``head_scale`` the logits, so that answers
    depend on the prompt and commits vary in confidence. ``eos_id``: which id ends an answer."""
    from random_llada import EOS_ID, MASK_ID, VOCAB

    from vllm_elastic.core.config import LLaDAConfig
    from vllm_elastic.core.model import LLaDAModel

    eos = EOS_ID if eos_id is None else eos_id
    torch.manual_seed(seed)
    cfg = LLaDAConfig(
        d_model=64,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        n_layers=n_layers,
        mlp_hidden_size=128,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        rope_theta=10000.0,
        max_sequence_length=256,
        mask_token_id=MASK_ID,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = LLaDAModel(cfg).eval()
    with torch.no_grad():
        model.transformer["ff_out"].weight.mul_(head_scale)
        # a trained LLaDA never predicts the mask id; a random one may, and Fast-dLLM's block loop
        # would then retry that position forever (its logit is 0, below the best of the others)
        model.transformer["ff_out"].weight[MASK_ID] = 0.0
        for block in model.transformer["blocks"]:
            for proj in (block.q_proj, block.k_proj, block.v_proj, block.attn_out):
                proj.weight.mul_(attn_scale)
    return model


@contextmanager
def one_thread():
    """Tiny matmuls on a shared CPU: more threads only spin against each other (6x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


MIN_MARGIN = 1e-6  # closest call a float32 reordering cannot flip (probabilities, relative scores)
GAMMA_MARGIN = 1e-4  # no drift similarity this close to gamma


def assert_same_decode(trace: Trace, result, mask_id: int, eos_id: int, label: str = "") -> None:
    """The project's ``DecodeResult`` equals the reference's, token for token and counter for
    counter, and no decision of the reference was a call float noise could have flipped."""
    tokens, by_eos = trace.output(mask_id, eos_id)
    assert result.tokens == tokens, f"{label}: tokens differ"
    assert result.finished_by_eos == by_eos, label
    assert result.stats.nfe == trace.nfe, f"{label}: NFE"
    assert result.stats.refreshes == trace.refreshes, f"{label}: refreshes per layer"
    assert result.stats.rows_computed == trace.rows_computed, f"{label}: rows computed"
    closest = min(trace.threshold_margin, trace.argmax_margin, trace.rank_margin)
    assert closest > MIN_MARGIN, f"{label}: a decision within {closest:.1e}: pick another seed"
    assert trace.gamma_margin > GAMMA_MARGIN, (
        f"{label}: similarity {trace.gamma_margin:.1e} from gamma"
    )
