"""The compiled elastic_decide op against its torch twin (``policy.decide_layer``), on fresh random
statistics every run: sequences of different lengths, masked keys, track_num 0 to 3, absent
tracked slots, both cosine modes and a mix of them, immediate and deferred sequences, sequences
that already refresh or already hold a deferred trigger, and gammas on both sides of each
similarity, so that triggers fire and do not. The seed of each test is printed.
"""

from __future__ import annotations

import random

import pytest
import torch
from test_elastic_attention import require_extension

from vllm_elastic import ops
from vllm_elastic.core.policy import decide_layer

NUM_LAYERS = 6
GAMMA_MARGIN = 1e-3  # each gamma this far from its similarity: no decision rests on rounding
# The similarities agree to float32 rounding, not bit for bit: torch's vectorised float32 sqrt is
# not always correctly rounded (about 0.7% of inputs differ by an ulp from std::sqrt).
SIMILARITY_RTOL, SIMILARITY_ATOL = 1e-6, 1e-7  # the atol: sums of cosines near 0


def random_inputs(gen: torch.Generator, r: int, n: int, k: int, width: int, mode: int) -> list:
    """The arguments of ``decide_layer`` for one layer (layer and num_layers last)."""
    lens = torch.randint(max(1, n // 2), n + 1, (r,), generator=gen)
    lens[0] = n
    key_valid = torch.arange(n)[None] < lens[:, None]
    mass = torch.rand(r, n, generator=gen) * key_valid
    heads = torch.rand(3, r, k, n, generator=gen)
    heads[0] = heads[0] * 2 - 1  # a.b may be negative
    keys = torch.stack([torch.rand(r, generator=gen) * 5, torch.randint(0, 6, (r,)).float()])
    still_masked = (torch.rand(r, n, generator=gen) < 0.4) & key_valid
    track_num = torch.randint(0, width + 1, (r,), generator=gen)
    kept = torch.arange(width)[None] < track_num[:, None]
    tracked_valid = torch.rand(r, k, generator=gen) < 0.8
    pair_valid = tracked_valid[:, :, None] & key_valid[:, None, :]
    over_heads = torch.rand(r, generator=gen) < 0.5
    if mode >= 0:
        over_heads[:] = bool(mode)
    layer = int(torch.randint(0, NUM_LAYERS, (1,), generator=gen))
    refresh_from = torch.randint(layer, NUM_LAYERS + 1, (r,), generator=gen)
    deferred_from = torch.where(
        torch.rand(r, generator=gen) < 0.2, torch.randint(1, NUM_LAYERS, (r,), generator=gen),
        NUM_LAYERS,
    )
    return [
        mass, heads, keys, still_masked, ~key_valid, kept, ~pair_valid,
        pair_valid.sum((1, 2)).clamp_min(1), over_heads, mode,
        torch.rand(r, generator=gen) < 0.8, torch.rand(r, generator=gen) < 0.4,
        torch.zeros(r, dtype=torch.float64), refresh_from, deferred_from, layer, NUM_LAYERS,
    ]


@pytest.mark.parametrize("mode", [1, 0, -1], ids=["head", "key", "mixed"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_kernel_equals_twin(mode: int, k: int) -> None:
    require_extension()
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    gen = torch.Generator().manual_seed(seed)
    fired = 0
    for _ in range(20):
        r, n = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(4, 70, (1,)))
        args = random_inputs(gen, r, n, k, min(3, n), mode)
        # gammas on either side of each sequence's similarity, by a margin
        sim = decide_layer(*args)[1]
        side = torch.where(torch.rand(r, generator=gen) < 0.5, GAMMA_MARGIN, -GAMMA_MARGIN)
        args[12] = torch.nan_to_num(sim, nan=0.5) + side.double()
        before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        want = decide_layer(*args)
        got = torch.ops.vllm_elastic.elastic_decide(*args)
        assert torch.equal(got[0], want[0]), "most-attended keys"
        torch.testing.assert_close(
            got[1], want[1], rtol=SIMILARITY_RTOL, atol=SIMILARITY_ATOL, equal_nan=True
        )
        assert torch.equal(got[2], want[2]), "refresh_from"
        assert torch.equal(got[3], want[3]), "deferred_from"
        for a, b in zip(args, before):
            assert not isinstance(a, torch.Tensor) or torch.equal(a, b), "an input was written"
        fired += int((got[2] != args[13]).sum() + (got[3] != args[14]).sum())
    assert k == 0 or fired > 0, "no trigger fired: the decisions were not exercised"


def test_the_wrapper_takes_the_kernel_on_the_cpu() -> None:
    require_extension()
    gen = torch.Generator().manual_seed(0)
    args = random_inputs(gen, 3, 20, 2, 3, -1)
    got = ops.elastic_decide(*args)
    want = decide_layer(*args)
    assert all(torch.equal(a, b) for a, b in zip(got[2:], want[2:]))
    assert torch.equal(got[0], want[0])


def test_bad_arguments_raise_value_errors() -> None:
    require_extension()
    gen = torch.Generator().manual_seed(1)
    args = random_inputs(gen, 3, 20, 2, 3, 1)
    args[0] = args[0].double()
    with pytest.raises(ValueError, match="mass must be"):
        torch.ops.vllm_elastic.elastic_decide(*args)
    args = random_inputs(gen, 3, 20, 2, 3, 1)
    args[12] = args[12][:2]
    with pytest.raises(ValueError, match="gamma must be"):
        torch.ops.vllm_elastic.elastic_decide(*args)
