"""Block batches: each sequence in the semi-autoregressive sampler's state, nothing after its block
shown, the loss on the block alone."""

from __future__ import annotations

import pytest
import torch

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel
from vllm_elastic.tasks import SIZED_FAMILIES, TRAINING_FAMILIES
from vllm_elastic.train.batches import DRILL_PAD, batch_rng, make_batch, sample_problems
from vllm_elastic.train.bpe import build_tokenizer
from vllm_elastic.train.objective import block_noise, masked_diffusion_loss

BLOCK = 32


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(seed=0)


def test_block_batches_end_after_their_block(tokenizer):
    """Test-bed batches: one block in each answer, nothing after it shown. Drill batches are never
    block batches."""
    plain = make_batch(0, 5, 1.0, tokenizer, 6144, set())
    assert plain.block_start is None
    kinds = set()
    for step in range(12):
        batch = make_batch(0, step, 1.0, tokenizer, 6144, set(), block_share=1.0)
        again = make_batch(0, step, 1.0, tokenizer, 6144, set(), block_share=1.0)
        assert torch.equal(batch.ids, again.ids)  # a pure function of (seed, step)
        assert batch.ids.numel() <= 6144 or batch.ids.shape[0] == 1
        kinds.add(batch.drills)
        if batch.drills:
            assert batch.block_start is None and batch.block_end is None
            continue
        assert torch.equal(batch.block_start, again.block_start)
        for row in range(batch.ids.shape[0]):
            maskable = batch.is_response[row]  # [T]: the answer, its EOS padding
            start, end = int(batch.block_start[row]), int(batch.block_end[row])
            prompt_len = int(maskable.float().argmax())
            answer_len = int((batch.ids[row, prompt_len:] != tokenizer.eos_token_id).sum())
            assert prompt_len <= start <= prompt_len + answer_len
            assert 1 <= end - start <= BLOCK and end <= prompt_len + batch.canvas
            assert maskable[prompt_len:].all()
    assert kinds == {True, False}


def max_prompt(batch) -> int:
    """The longest prompt of a batch: where its first maskable position is latest."""
    return max(int(row.float().argmax()) for row in batch.is_response)


def is_drill(text: str, maskable: torch.Tensor) -> bool:
    """A decoded row is a drill: sums, transcribe, recite (a story prompt, no working), or
    story_signs (a story whose maskable positions leave gaps: its operands and step numbers)."""
    recite = "How many" in text and "The answer is" not in text
    first = int(maskable.float().argmax())
    gaps = not maskable[first:].all()
    return "Work out each line:" in text or "Copy the steps:" in text or recite or gaps


def test_drill_batches_end_a_few_tokens_past_their_longest_answer(tokenizer):
    """Copy drills: padded with DRILL_PAD EOS past the longest answer, after the longest prompt."""
    for step in range(6):
        batch = make_batch(0, step, 0.0, tokenizer, 6144, set(), only=("transcribe", "recite"))
        assert batch.drills
        prompts = [int(row.float().argmax()) for row in batch.is_response]  # [B]
        ends = [int((row != tokenizer.eos_token_id).nonzero().max()) + 1 for row in batch.ids]
        longest = max(e - p for p, e in zip(prompts, ends))
        assert batch.ids.shape[1] == max(prompts) + longest + DRILL_PAD
        assert all(batch.is_response[r, p:].all() for r, p in enumerate(prompts))


def test_a_batch_is_drills_or_test_bed_problems(tokenizer):
    """Never both; test-bed answers padded to the canvas; drills as often as their weight."""
    kinds = []
    for step in range(40):
        batch = make_batch(2, step, 1.0, tokenizer, 6144, set())
        texts = [tokenizer.decode(row, skip_special_tokens=True) for row in batch.ids]
        drills = [is_drill(text, m) for text, m in zip(texts, batch.is_response)]
        assert all(drills) if batch.drills else not any(drills)
        if batch.drills:  # one drill a batch
            forms = {("Work out" in t, "Copy the steps" in t, "The answer is" in t) for t in texts}
            assert len(forms) == 1, forms
        else:
            assert batch.ids.shape[1] - max_prompt(batch) == batch.canvas
        kinds.append(batch.drills)
    assert 0.15 < sum(kinds) / len(kinds) < 0.65  # 40% of the late mixture's weight


def test_canvases_restricts_the_canvas_curriculum(tokenizer):
    """The curriculum draws 256 and 512 early and all three late; ``canvases`` those named alone,
    at any progress."""
    early = {make_batch(0, s, 0.0, tokenizer, 6144, set(), only=("listing",)).canvas
             for s in range(24)}  # fmt: skip
    assert early == {256, 512}
    for progress in (0.0, 0.9):
        drawn = {make_batch(0, s, progress, tokenizer, 6144, set(), only=("listing",),
                            canvases=(1024,)).canvas for s in range(6)}  # fmt: skip
        assert drawn == {1024}


def test_block_noise_hides_what_follows_the_block():
    gen = torch.Generator().manual_seed(0)
    start = torch.tensor([10, 20, 5, 12] * 16)  # [B]
    end = start + BLOCK
    maskable = torch.zeros(64, 80, dtype=torch.bool)
    maskable[:, 5:] = True
    maskable[::4, 60:] = False  # a drill's given text: never masked, never hidden
    masked, hidden, t, length = block_noise(maskable, start, end, gen)
    pos = torch.arange(80)[None, :]
    in_block = (pos >= start[:, None]) & (pos < end[:, None])
    assert not (masked & ~in_block).any() and masked.any()
    assert torch.equal(hidden, masked | (maskable & (pos >= end[:, None])))
    assert not (hidden & ~maskable).any()
    assert not hidden[pos.expand_as(hidden) < start[:, None]].any()  # the prefix stays clean
    assert ((t > 0) & (t <= 1)).all()
    assert torch.equal(length[:, 0], (maskable & in_block).sum(1).float())


def test_block_loss_ignores_what_follows_the_block(tokenizer):
    """Maskable tokens after the block can be anything: they are hidden, so the loss cannot see
    them."""
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=64,
                      vocab_size=len(tokenizer), embedding_size=len(tokenizer),
                      max_sequence_length=1024, mask_token_id=tokenizer.mask_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LLaDAModel(cfg)
    batch = make_batch(0, 3, 1.0, tokenizer, 2048, set(), block_share=1.0, only=SIZED_FAMILIES)
    block = (batch.block_start, batch.block_end)
    losses = []
    for fill in (tokenizer.eos_token_id, 7):
        ids = batch.ids.clone()
        after = torch.arange(ids.shape[1])[None, :] >= batch.block_end[:, None]  # [B, T]
        ids[after & batch.is_response] = fill
        gen = torch.Generator().manual_seed(1)
        losses.append(masked_diffusion_loss(model, ids, batch.is_response,
                                            tokenizer.mask_token_id, gen, 0.0, block))  # fmt: skip
    assert torch.isfinite(losses[0]) and losses[0] > 0
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_the_drill_masks_its_results_alone(tokenizer):
    """In a uniform batch too, a sums row's maskable positions are its results: every result
    token and nothing else (the operands and the EOS padding stay given)."""
    seen = 0
    for step in range(6):
        batch = make_batch(1, step, 0.25, tokenizer, 6144, set())  # the sums drill's phase
        for row in range(batch.ids.shape[0]):
            text = tokenizer.decode(batch.ids[row], skip_special_tokens=True)
            if "Work out each line:" not in text:
                continue
            seen += 1
            results = [line.split(" = ")[1] for line in text.splitlines() if " = " in line]
            assert tokenizer.decode(batch.ids[row, batch.is_response[row]]) == "".join(results)
    assert seen > 0


def test_the_drills_come_first():
    """The family curriculum: the copy drills alone, at one distance and then at any, then
    mostly the sums drill, then every family; ``only``
    draws the named families alone, whatever the progress; ``drills`` one kind alone."""

    def share(progress, only=(), drills=None):
        draws = [sample_problems(batch_rng(0, s), 256, 10, set(), progress, only, drills)
                 for s in range(40)]
        drawn = [p["task"] for problems in draws for p in problems]
        return drawn.count("sums") / len(drawn), set(drawn)

    first, first_families = share(0.0)
    varied, varied_families = share(0.15)
    early, early_families = share(0.25)
    late, families = share(0.5)
    assert first == 0 and first_families == {"transcribe", "recite"}
    assert varied == 0 and varied_families == {"transcribe", "transcribe_varied", "recite"}
    copy_any = {"transcribe_varied", "recite"}
    assert 0.55 < early < 0.85 and early_families == {"sums", *copy_any}
    # ``counting`` is trained on with --only, not in the recipe (docs/TRAINING.md)
    assert 0.05 < late < 0.3 and families == {*TRAINING_FAMILIES} - {"transcribe", "counting"}
    assert share(0.5, ("listing",))[1] == {"listing"}
    assert share(0.5, drills=True)[1] == {"sums", "story_signs", *copy_any}
    assert share(0.5, drills=False)[1] == {"story", "program", "listing"}


@pytest.mark.parametrize("block_share", [0.0, 1.0])
def test_loss_weightings_against_a_fresh_computation(tokenizer, block_share):
    """``mean``: the plain mean cross-entropy over the masked positions; ``llada``: each masked
    position weighted 1/(t * maskable length of its sequence's region), summed, over B. Both
    recomputed here from the same draw of the masks."""
    from vllm_elastic.train.objective import noise

    cfg = LLaDAConfig(d_model=32, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=64,
                      vocab_size=len(tokenizer), embedding_size=len(tokenizer),
                      max_sequence_length=1024, mask_token_id=tokenizer.mask_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LLaDAModel(cfg)
    batch = make_batch(0, 2, 1.0, tokenizer, 2048, set(), block_share=block_share,
                       only=SIZED_FAMILIES)
    block = None if batch.block_start is None else (batch.block_start, batch.block_end)
    got = {
        w: masked_diffusion_loss(model, batch.ids, batch.is_response, tokenizer.mask_token_id,
                                 torch.Generator().manual_seed(5), 0.3, block, w)
        for w in ("mean", "llada")
    }  # fmt: skip
    gen = torch.Generator().manual_seed(5)  # the same draw as inside the loss
    if block is None:
        masked, t = noise(batch.ids, batch.is_response, 0.3, gen)
        hidden, length = masked, batch.is_response.sum(1).float()
    else:
        masked, hidden, t, length = block_noise(batch.is_response, *block, gen)
        length = length[:, 0]
    noisy = batch.ids.masked_fill(hidden, tokenizer.mask_token_id)
    logits = model(noisy)
    mean_total, mean_count, llada = 0.0, 0, 0.0
    for b in range(batch.ids.shape[0]):
        for pos in masked[b].nonzero().flatten().tolist():
            ce = torch.nn.functional.cross_entropy(logits[b, pos], batch.ids[b, pos]).item()
            mean_total, mean_count = mean_total + ce, mean_count + 1
            llada += ce / (t[b, 0].item() * length[b].item())
    assert mean_count > 0
    assert got["mean"].item() == pytest.approx(mean_total / mean_count, rel=1e-5)
    assert got["llada"].item() == pytest.approx(llada / batch.ids.shape[0], rel=1e-5)


def test_first_block_share_starts_blocks_at_the_answer(tokenizer):
    """Share 1: every test-bed row's block starts at its answer's first token; share 0: the
    batches are exactly those drawn without the option."""
    for step in range(4):
        default = make_batch(0, step, 1.0, tokenizer, 6144, set(), block_share=1.0)
        zero = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, (), 0.0)
        assert torch.equal(default.ids, zero.ids)
        if default.drills:  # no blocks in a drill batch
            assert default.block_start is None and zero.block_start is None
            continue
        assert torch.equal(default.block_start, zero.block_start)
        first = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, (), 1.0)
        for row in range(first.ids.shape[0]):
            maskable = first.is_response[row]
            assert int(first.block_start[row]) == int(maskable.float().argmax())


def test_a_first_block_share_per_family(tokenizer):
    """A share given per family starts the blocks of that family's rows alone at the answer; a
    family the mapping leaves out draws its block start as with no share. The trainer's default
    is the recipe's mapping, and ``--first-block-share S`` gives every family S."""
    from vllm_elastic.train.batches import FIRST_BLOCK_SHARES
    from vllm_elastic.train.testbed import first_block_shares, parse_args

    seen = set()
    for step in range(8):
        batch = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, SIZED_FAMILIES,
                           {"listing": 1.0})  # fmt: skip
        prompts = tokenizer.batch_decode(batch.ids)
        for row, text in enumerate(prompts):
            start = int(batch.is_response[row].float().argmax())
            at_answer = int(batch.block_start[row]) == start
            if "List the numbers" in text:
                assert at_answer
                seen.add("listing")
            elif not at_answer:
                seen.add("elsewhere")
    assert seen == {"listing", "elsewhere"}
    assert first_block_shares(parse_args([])) == FIRST_BLOCK_SHARES == {"listing": 0.5}
    assert first_block_shares(parse_args(["--first-block-share", "0.25"])) == 0.25


def test_last_block_share_puts_the_answers_end_in_the_block(tokenizer):
    """Share 1 (no first-block share): every row's block holds its answer's end, the first EOS
    at an offset that varies over the rows; share 0 leaves the batches as they were."""
    eos = tokenizer.eos_token_id
    offsets = set()
    for step in range(6):
        plain = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, ("listing",), 0.0)
        zero = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, ("listing",), 0.0,
                          last_block_share=0.0)  # fmt: skip
        assert torch.equal(plain.ids, zero.ids) and torch.equal(plain.block_start, zero.block_start)
        last = make_batch(0, step, 1.0, tokenizer, 6144, set(), 1.0, 32, ("listing",), 0.0,
                          last_block_share=1.0)  # fmt: skip
        for row in range(last.ids.shape[0]):
            start = int(last.is_response[row].float().argmax())
            first_eos = start + int((last.ids[row, start:] == eos).float().argmax())
            lo, hi = int(last.block_start[row]), int(last.block_end[row])
            assert lo <= first_eos < hi
            offsets.add(first_eos - lo)
    assert len(offsets) >= 10
