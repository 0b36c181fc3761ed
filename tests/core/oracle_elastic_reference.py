"""The Elastic-Cache reference decoder: VILA-Lab ``llada/generate.py@46c0bc32``
(``generate_with_elastic_cache``) with ``LLaDABlock.attention`` of
``llada/model/modeling_llada.py``, one sequence at a time, on ``oracle_reference.RefLLaDA``
(nothing from ``vllm_elastic.core``).

Step 0 is a full forward that fills every layer's caches (layer input, q, k, v for all N positions).
Each later step computes, at every layer, only the rows ``tracked, newly committed, window`` (the
window: the W leftmost masked positions, or all of them without block caching) and writes them into
the caches; at each such layer the tracked rows' attention before this step (their stored
queries against the keys before this step's update) is compared with their attention now; the
first layer l* whose similarity is below gamma makes layers l*+1 .. L-1 recompute all N positions
from the cached layer input. Each layer's most-attended keys (window rows' mass over heads and
rows, still-masked keys excluded) are tracked next step. The window's tokens with confidence >=
min(threshold, max) are committed; positions after the first committed EOS are never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from oracle_reference import RefLLaDA, Trace, answered, commit_choice, confidence


class ElasticCaches:
    """Per layer and position: the layer input, post-RoPE q and k, and v (each full length N)."""

    def __init__(self, ref: RefLLaDA, n: int) -> None:
        layers, dh = ref.num_layers, ref.head_dim
        self.x = torch.zeros(layers, n, ref.d_model)
        self.q = torch.zeros(layers, n, ref.n_heads, dh)
        self.k = torch.zeros(layers, n, ref.n_kv_heads, dh)
        self.v = torch.zeros(layers, n, ref.n_kv_heads, dh)


@dataclass
class ElasticStep:
    """One step's inputs (filled by the loop) and what its forward decided."""

    rows: list[int]  # query rows below the refresh layer: tracked, newly committed, window
    start: int  # first layer that recomputes every position (-1: step 0, L: none)
    window: list[int]  # rows whose attention mass picks the most-attended keys
    tracked: list[int]  # rows whose attention drift is tested
    masked: list[int]  # keys that cannot be most-attended
    logit_rows: list[int]
    # decided by the forward:
    most_attended: list[list[int]] = field(default_factory=list)
    triggered_from: int | None = None  # l* + 1 of this step's first drift trigger
    rows_per_layer: list[int] = field(default_factory=list)


def drift_similarity(prev: torch.Tensor, now: torch.Tensor, cosine: str) -> float:
    """prev, now: [H, R, N]. ``head``: cosine over the head axis per (row, key), averaged over rows
    and keys (F.cosine_similarity(Sprev, Snow, dim=1) on [B, H, R, N] in the authors' code);
    ``key``: cosine of each attention row over the keys, averaged over heads and rows."""
    dim = 0 if cosine == "head" else -1
    return F.cosine_similarity(prev.double(), now.double(), dim=dim).mean().item()


def _elastic_layer_attention(ref, cache, layer, h, cur, st, trace, knobs) -> torch.Tensor:
    """Attention of the rows ``cur`` of one layer, with the most-attended choice and drift test."""
    refreshing = layer >= st.start
    q, k, v = ref.qkv(layer, h, torch.tensor(cur))
    if refreshing:  # every position is fresh: overwrite the whole cache
        cache.q[layer], cache.k[layer], cache.v[layer] = q, k, v
        keys, values = k, v
    else:  # the keys before this step, and the tracked rows' last stored queries
        keys_before, q_before = cache.k[layer].clone(), cache.q[layer, st.tracked].clone()
        cache.q[layer, cur], cache.k[layer, cur], cache.v[layer, cur] = q, k, v
        keys, values = cache.k[layer], cache.v[layer]
    probs = ref.probs(q, keys)  # [H, T, N]
    index = {p: i for i, p in enumerate(cur)}
    score = probs[:, [index[p] for p in st.window]].sum(dim=(0, 1))  # [N]
    score[st.masked] = 0.0
    st.most_attended.append(trace.topk(score, knobs["track_num"]))
    testing = (
        not refreshing and knobs["refresh"] == "drift" and st.triggered_from is None and st.tracked
    )
    if testing:
        now = probs[:, [index[p] for p in st.tracked]]  # [H, R, N]
        before = ref.probs(q_before, keys_before)  # [H, R, N]
        sim = drift_similarity(before, now, knobs["cosine"])
        trace.similarities.append(sim)
        trace.similarity_layers.append(layer)
        trace.gamma_margin = min(trace.gamma_margin, abs(sim - knobs["gamma"]))
        if sim < knobs["gamma"]:
            st.triggered_from = layer + 1
            if knobs["refresh_mode"] == "immediate":
                st.start = layer + 1  # layers l*+1 .. L-1 recompute every position
    return ref.attend(probs, values)


def _elastic_forward(ref, cache, x, st, trace, knobs) -> torch.Tensor:
    """One step's forward; returns the logits of ``st.logit_rows``."""
    n = x.numel()
    cur = st.rows
    h = ref.embed(x[cur])  # [T, d]
    for layer in range(ref.num_layers):
        if layer > st.start:  # already full length
            cache.x[layer] = h
        else:
            cache.x[layer, cur] = h
            if layer == st.start:  # the full cached input: fresh query rows, stale others
                h, cur = cache.x[layer].clone(), list(range(n))
        st.rows_per_layer.append(len(cur))
        h = ref.finish(
            layer, h, _elastic_layer_attention(ref, cache, layer, h, cur, st, trace, knobs)
        )
    index = {p: i for i, p in enumerate(cur)}
    return ref.logits(h[[index[p] for p in st.logit_rows]])


def elastic_reference(
    model,
    prompt: list[int],
    *,
    gen_length: int,
    window: int = 16,
    threshold: float = 0.9,
    gamma: float = 0.9,
    track_num: int = 1,
    block_caching: bool = True,
    tokens_per_step: int | None = None,
    cosine: str = "head",
    refresh: str = "drift",
    refresh_mode: str = "immediate",
    early_stop: bool = False,
    full_refresh_every: int | None = None,
    refresh_start: str = "above",
) -> Trace:
    """Elastic-Cache decode of one prompt. ``refresh``: ``drift`` (the authors'), ``always`` (every
    layer every step), ``never`` (no drift test). ``refresh_mode="deferred"``: a step's first drift
    trigger at layer l* does not refresh that step (and ends its drift tests); the next step
    recomputes every position from layer l*+1 on. ``full_refresh_every`` K: every K-th step also
    recomputes every position from layer 0 (a pending deferred refresh is then dropped).
    ``refresh_start="first"`` (deferred only): the step after a trigger below the last layer
    recomputes every position from layer 0 instead of l*+1."""
    knobs = dict(
        track_num=track_num, gamma=gamma, cosine=cosine, refresh=refresh, refresh_mode=refresh_mode
    )
    ref = RefLLaDA(model)
    num_layers, p_len = ref.num_layers, len(prompt)
    x = torch.tensor(prompt + [ref.mask_id] * gen_length)
    n = x.numel()
    trace = Trace(x.tolist(), p_len, num_layers)
    cache = ElasticCaches(ref, n)
    masked = list(range(p_len, n))
    tracked: list[int] = []
    newdec: list[int] = []
    pending, eos_seen, step = num_layers, False, 0
    while True:
        win = masked[:window] if block_caching else list(masked)
        if step == 0:
            rows, start = list(range(n)), -1
        else:
            rows = tracked + [p for p in newdec if p not in tracked]
            rows += [p for p in win if p not in rows]
            full = refresh == "always" or (full_refresh_every and step % full_refresh_every == 0)
            start = 0 if full else pending
        pending = num_layers
        st = ElasticStep(rows, start, win, tracked, list(masked), win[:window])
        logits = _elastic_forward(ref, cache, x, st, trace, knobs)
        trace.count_forward(st.rows_per_layer, st.start)
        tracked = sorted({p for layer in st.most_attended for p in layer})
        trace.tracked.append(tracked)
        if refresh_mode == "deferred" and st.triggered_from is not None:
            pending = st.triggered_from
            if refresh_start == "first" and pending < num_layers:
                pending = 0  # a trigger at the last layer has no layer above it: no refresh
        conf, tokens = confidence(trace, logits)
        keep = commit_choice(trace, conf, threshold, tokens_per_step)
        newdec = [st.logit_rows[i] for i in keep]
        values = [int(tokens[i]) for i in keep]
        x[newdec] = torch.tensor(values, dtype=x.dtype)
        masked = [p for p in masked if p not in newdec]
        eos_at = [p for p, t in zip(newdec, values, strict=True) if t == ref.eos_id]
        if not eos_seen and eos_at:  # nothing after the first committed EOS is decoded
            eos_seen = True
            masked = [p for p in masked if p <= min(eos_at)]
        step += 1
        trace.canvas = x.tolist()
        if not masked or (early_stop and answered(trace.canvas, p_len, ref.mask_id, ref.eos_id)):
            return trace
