"""Elastic-Cache decoding equals an independent reference, token for token and counter for counter.

The reference (``oracle_elastic_reference``) is the authors' ``generate_with_elastic_cache`` loop
written again as a plain loop over one sequence, with its own attention, RoPE and caches. Each
case decodes prompts of different lengths in one ``generate`` batch and compares every sequence's
tokens, EOS flag, NFE, per-layer refresh counts and rows computed (``assert_same_decode``, which
also rejects a drift similarity within ``GAMMA_MARGIN`` of gamma or a commit decision within
float noise), and the drift tests' per-layer count, sum and lowest similarity (the decoder's
``ComputeStats``). Each case checks that the path it is named for really ran: a window smaller than
the canvas with parallel commits, EOS for some prompts and not others, drift refreshes starting
at several layers. The gammas were picked by scanning them with the reference on this model.
"""

from __future__ import annotations

import math

import pytest
from oracle_elastic_reference import elastic_reference
from oracle_reference import assert_same_decode, one_thread, small_model
from random_llada import MASK_ID, random_prompts

from vllm_elastic.core.generate import generate
from vllm_elastic.core.settings import DecodeSettings

EOS = 60  # an id this random model commits for some of the prompts and not for the others
BASE = dict(gen_length=48, window=8, threshold=0.3)  # window 8 of a 48-token canvas

# id -> (knobs, what the case must exercise). "drift": refreshes start at >= 2 distinct layers;
# "eos": some prompts end by EOS and some do not; "parallel": a step commits several tokens;
# "post-eos": a position after the first EOS was tracked; "full": a later step refreshed from 0.
CASES = {
    "track1": (dict(gamma=0.9, track_num=1), {"drift", "eos", "parallel"}),
    "track3": (dict(gamma=0.88, track_num=3), {"drift", "eos", "parallel"}),
    "no-block-caching": (dict(gamma=0.875, block_caching=False), {"drift", "parallel"}),
    "deferred": (dict(gamma=0.905, refresh_mode="deferred"), {"drift", "parallel"}),
    "deferred-track3": (dict(gamma=0.885, track_num=3, refresh_mode="deferred"), {"drift"}),
    "key-cosine": (dict(gamma=0.865, track_num=3, cosine="key"), {"drift"}),
    "top-k-commit": (dict(gamma=0.87, tokens_per_step=2), {"drift", "parallel"}),
    "early-stop": (dict(gamma=0.9, early_stop=True), {"drift", "eos"}),
    # after the first EOS the later positions leave the masked set but stay MASK: they can be
    # most-attended (tracked) from then on, as in the authors' code
    "post-eos-tracking": (dict(gamma=0.905, window=16, track_num=3), {"drift", "eos", "post-eos"}),
    "refresh-always": (dict(refresh="always"), {"eos"}),
    # a full refresh from layer 0 every K-th step beside the drift test (both modes)
    "full-refresh-every-3": (dict(gamma=0.9, full_refresh_every=3), {"drift", "full", "parallel"}),
    "full-refresh-deferred": (
        dict(gamma=0.905, refresh_mode="deferred", full_refresh_every=3), {"drift", "full"}
    ),
    "refresh-never": (dict(refresh="never"), {"eos", "parallel"}),
    # a triggered refresh recomputes every layer from layer 0 at the next step
    "deferred-from-first-layer": (
        dict(gamma=0.9, refresh_mode="deferred", refresh_start="first"), {"full", "parallel"}
    ),
}


@pytest.fixture(scope="module")
def gqa_model():
    return small_model(seed=0, eos_id=EOS)  # 4 layers, 4 query heads over 2 key/value heads


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(5, seed=1, lo=4, hi=24)  # lengths 8, 18, 12, 21, 18


def check_batch(model, prompts, knobs: dict, needs: set[str]):
    """Decode ``prompts`` in one batch and each alone with the reference; compare; check paths."""
    knobs = {**BASE, **knobs}
    results = generate(model, prompts, DecodeSettings(method="elastic", **knobs))
    traces = [elastic_reference(model, p, **knobs) for p in prompts]
    for i, (trace, result) in enumerate(zip(traces, results, strict=True)):
        assert_same_decode(trace, result, MASK_ID, model.config.eos_token_id, f"prompt {i}")
        assert result.stats.refresh_wait_steps == 0  # generate grants every deferred refresh
        # refresh="never": the decoder still measures the similarity (nothing fires), the
        # reference measures none
        if knobs.get("refresh", "drift") == "drift":
            gamma = knobs.get("gamma", DecodeSettings().gamma)
            assert_same_drift_record(trace, result.stats, gamma, f"prompt {i}")
    if "drift" in needs:
        starts = [{s for s in t.refresh_starts[1:] if s >= 0} for t in traces]
        assert any(len(s) >= 2 for s in starts), f"refresh start layers per prompt: {starts}"
    if "eos" in needs:
        assert {t.output(MASK_ID, model.config.eos_token_id)[1] for t in traces} == {True, False}
    if "post-eos" in needs:  # a tracked key still holds MASK at the end: it lies after the EOS
        assert any(t.canvas[k] == MASK_ID for t in traces for step in t.tracked for k in step)
    if "full" in needs:  # a step after the first recomputed every layer from layer 0
        assert any(0 in t.refresh_starts[1:] for t in traces)
    if "parallel" in needs:
        assert max(t.max_commit for t in traces) > 1
    return traces


def assert_same_drift_record(trace, stats, gamma: float, where: str) -> None:
    """The per-layer count, sum and lowest of the drift similarities, and the tests that fired,
    equal the reference's."""
    for layer in range(len(stats.drift_tests)):
        sims = [s for s, at in zip(trace.similarities, trace.similarity_layers) if at == layer]
        assert stats.drift_tests[layer] == len(sims), f"{where}, layer {layer}"
        assert stats.drift_fires[layer] == sum(s < gamma for s in sims), f"{where}, layer {layer}"
        assert math.isclose(stats.drift_sum[layer], sum(sims), rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(stats.drift_min[layer], min(sims, default=math.inf), rel_tol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_elastic_equals_reference(gqa_model, prompts, case):
    knobs, needs = CASES[case]
    traces = check_batch(gqa_model, prompts, knobs, needs)
    if knobs.get("refresh") == "always":  # every layer recomputes every row after step 0
        assert all(t.refreshes == [t.nfe - 1] * 4 for t in traces)
    if knobs.get("refresh") == "never":
        assert all(sum(t.refreshes) == 0 for t in traces)
    if knobs.get("early_stop"):  # the same answers; fewer forwards where a later step commits
        # an EOS before the first one (the masked set was cut at the first, not at the earliest)
        late = [
            elastic_reference(gqa_model, p, **BASE, **dict(knobs, early_stop=False))
            for p in prompts
        ]
        eos = gqa_model.config.eos_token_id
        assert [t.output(MASK_ID, eos) for t in traces] == [f.output(MASK_ID, eos) for f in late]
        assert any(t.nfe < f.nfe for t, f in zip(traces, late, strict=True))


def test_elastic_mha_equals_reference(prompts):
    """The same on a model without GQA (as many key/value heads as query heads, like LLaDA-8B)."""
    model = small_model(seed=0, n_kv_heads=4, eos_id=EOS)
    check_batch(model, prompts, dict(gamma=0.915, track_num=1), {"drift"})


def test_query_rows_covering_the_canvas(gqa_model):
    """A 3-token prompt with track_num 3 and no block caching: the query rows (the tracked prompt,
    the newly committed and every masked position) are all N positions, in the authors' order
    rather than by position. Each row keeps its own RoPE position."""
    prompts = [[5, 17, 33], [40, 2, 9, 21]]
    knobs = dict(gamma=0.925, track_num=3, block_caching=False)
    traces = check_batch(gqa_model, prompts, knobs, set())
    n = len(prompts[0]) + BASE["gen_length"]
    assert n in traces[0].query_rows[1:], traces[0].query_rows
