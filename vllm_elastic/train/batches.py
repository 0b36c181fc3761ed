"""Training batches for the test-bed model: problems drawn on the fly, one canvas per batch.

Every batch is a pure function of (seed, step), so a run resumed from a checkpoint sees exactly the
batches an uninterrupted run would. A batch holds problems sized for one canvas (256, 512 or 1024).
It is either test-bed problems, each answer padded with EOS to the canvas as the sampler's canvas
is at inference, or drills (``DRILL_FAMILIES``), whose answers end ``DRILL_PAD`` EOS past the
batch's longest: a canvas of EOS is most of a short answer's sequence, and it held back the copy
from the prompt that the copy drills teach (docs/TRAINING.md). The number of sequences follows a
token budget, so a step costs about the same at every canvas. The curriculum moves weight from
short to long canvases as training goes on; short ones stay in the mix. The first steps draw the
drills alone (``FAMILY_CURRICULUM``), then every training family.

A block batch (a ``block_share`` of the test-bed batches) also marks in each sequence one block
of ``block_length`` positions, starting at a uniformly drawn point of the answer (its end
included): the objective decodes that block with everything after it masked, as the sampler does.
Drill batches are never in that state: with three quarters of them there, the copy drills alone
filled in half of ``transcribe``'s copied tokens at update 518, and without, all of them by update
498 (docs/TRAINING.md). A problem with ``fill`` spans (the ``sums`` and ``story_signs`` drills)
has them alone maskable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..tasks import DRILL_FAMILIES, TRAINING_FAMILIES, make_problem
from ..tasks.prompting import encode_prompt

CHAT_SHARE = 0.5  # the rest of the prompts are raw, as a /v1/completions client sends them
DRILL_PAD = 8  # EOS after a drill batch's longest answer
# (progress at which a phase starts, canvas weights): answer length grows over the run.
CURRICULUM = (
    (0.0, {256: 0.75, 512: 0.25, 1024: 0.0}),
    (0.25, {256: 0.45, 512: 0.35, 1024: 0.2}),
    (0.55, {256: 0.3, 512: 0.35, 1024: 0.35}),
)
# (progress at which a phase starts, family weights): the copy drills alone, at one distance and
# then at any, then the sums drill (with the copy drills to keep the copy), then everything. A drill
# batch holds one drill. The copy from the prompt, which every story line, program comment and
# first line needs, forms on ``transcribe`` and carries over to ``recite`` and ``story`` in about
# 500 updates of the copy drills alone; drawn only inside the test-bed families it did not form in
# 4,500 updates. A model that has it at ``transcribe``'s one distance learns it at any distance
# (``transcribe_varied``) in about 250 updates, where from scratch it did not in 450; with the one
# distance alone, sampled story answers had the working's shape but not the prompt's steps. The
# sums table is the slowest thing to learn and the story family needs it: alone, the drill reached
# 79% of results in 400 updates; taking turns with the copy drills from the first update, neither
# drill formed in 1,000; alone after the copy, it lost the copy. A story line under the sampler
# needs its sentence, sign and result written with its step number and operand already in place
# (``story_signs``): trained so beside ``story``, whole answers written right under the sampler
# went from 0 to 6 of 8 in 900 updates, where ``story`` and ``sums`` had none (docs/TRAINING.md).
FAMILY_CURRICULUM = (
    (0.0, {"transcribe": 0.5, "recite": 0.5}),
    (0.12, {"transcribe_varied": 0.6, "transcribe": 0.2, "recite": 0.2}),
    (0.18, {"sums": 0.7, "transcribe_varied": 0.15, "recite": 0.15}),
    (0.31, {"story": 0.2, "story_signs": 0.15, "program": 0.2, "listing": 0.2, "sums": 0.1,
            "transcribe_varied": 0.075, "recite": 0.075}),
)  # fmt: skip

# Share of a block batch's rows of a family whose block starts at the answer's first token (the
# trainer's default; ``--first-block-share S`` sets S for every family). A listing's first lines
# are where its count starts from the prompt alone, and later lines can take most of their
# digits from ten lines up instead of counting: trained on ``listing`` alone, half its blocks
# there got 229 of 395 steps right at update 600 against 148 without (docs/TRAINING.md).
FIRST_BLOCK_SHARES = {"listing": 0.5}


@dataclass(slots=True)
class Batch:
    ids: torch.Tensor  # [B, T] prompt, answer, EOS padding (to the canvas, or DRILL_PAD)
    is_response: torch.Tensor  # [B, T] what the objective may mask: the answer and its EOS padding,
    # or, for a problem with ``fill`` spans (a drill), those spans alone
    canvas: int  # what the problems are sized for (a drill batch ends before it)
    answer_tokens: int  # answer tokens in the batch, EOS padding excluded
    drills: bool = False  # drills alone (``DRILL_FAMILIES``), padded short
    block_start: torch.Tensor | None = None  # [B] first block position (block batches only)
    block_end: torch.Tensor | None = None  # [B] first position after the block


def phase_weights(curriculum, progress: float) -> dict:
    """A curriculum's weights at ``progress`` in [0, 1]: those of the last phase started."""
    current = curriculum[0][1]
    for start, weights in curriculum:
        if progress >= start:
            current = weights
    return current


def canvas_weights(progress: float, canvases: tuple[int, ...] = ()) -> dict[int, float]:
    """``CURRICULUM``'s weights at ``progress``, or ``canvases`` alone, equally (an experiment)."""
    return {c: 1.0 for c in canvases} or phase_weights(CURRICULUM, progress)


def batch_rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


def family_weights(progress: float, only: tuple[str, ...] = ()) -> dict[str, float]:
    """``FAMILY_CURRICULUM``'s weights at ``progress``, or ``only`` these families, equally (an
    experiment on part of the mixture)."""
    return {f: 1.0 for f in only} or phase_weights(FAMILY_CURRICULUM, progress)


def sample_problems(
    rng: random.Random, canvas: int, n: int, held_out: set[str], progress: float = 1.0,
    only: tuple[str, ...] = (), drills: bool | None = None,
) -> list[dict]:
    """n problems for ``canvas``, families by ``family_weights`` (the drills alone, or the rest
    alone, when ``drills`` says so), none of them in ``held_out``."""
    weights = family_weights(progress, only)
    families = [f for f in TRAINING_FAMILIES if weights.get(f, 0.0) > 0
                and (drills is None or (f in DRILL_FAMILIES) == drills)]  # fmt: skip
    out = []
    while len(out) < n:
        # problems of this canvas only: each family has one size per canvas, and a smaller
        # problem padded to it would bring back the count look-up that one size avoids
        family = rng.choices(families, [weights[f] for f in families])[0]
        problem = make_problem(family, rng, canvas)
        if problem["prompt"] not in held_out:
            out.append(problem)
    return out


def make_batch(
    seed: int,
    step: int,
    progress: float,
    tokenizer,
    token_budget: int,
    held_out: set[str],
    block_share: float = 0.0,
    block_length: int = 32,
    only: tuple[str, ...] = (),
    first_block_share: float | dict[str, float] = 0.0,
    canvases: tuple[int, ...] = (),
    last_block_share: float = 0.0,
) -> Batch:
    """``first_block_share``: that share of a block batch's rows (or, per family, of that
    family's rows) start their block at the answer's first token (the line written from the
    prompt alone); ``canvases``: these alone; ``last_block_share``: that share of the other
    block rows hold the answer's end in their block (``end_block_cut``)."""
    rng = batch_rng(seed, step)
    weights = canvas_weights(progress, canvases)
    canvas = rng.choices(list(weights), list(weights.values()))[0]
    blocks = rng.random() < block_share
    mix = family_weights(progress, only)
    drills = _draw_drills(rng, mix)
    blocks = blocks and not drills
    if drills:  # one drill a batch: the sums' few result tokens are not a small share of its loss
        drill_mix = {f: w for f, w in mix.items() if f in DRILL_FAMILIES}
        only = tuple(rng.choices(list(drill_mix), list(drill_mix.values())))
    eos = tokenizer.eos_token_id
    rows: list[tuple] = []  # (prompt, answer, block start in the answer, fill tokens or None)
    while True:  # grow the batch until the next sequence would pass the budget
        (problem,) = sample_problems(rng, canvas, 1, held_out, progress, only, drills)
        prompt = encode_prompt(tokenizer, problem["prompt"], chat=rng.random() < CHAT_SHARE)
        enc = tokenizer(problem["response"], add_special_tokens=False, return_offsets_mapping=True)
        answer = enc["input_ids"]
        if len(answer) >= canvas:
            raise ValueError(
                f"a {problem['task']} answer of {len(answer)} tokens overflows {canvas}"
            )
        cut = 0
        if blocks:  # (no draw for a share of 0: the batches stay those of before)
            share = (first_block_share.get(problem["task"], 0.0)
                     if isinstance(first_block_share, dict) else first_block_share)  # fmt: skip
            first = share > 0 and rng.random() < share
            if first:
                cut = 0
            elif last_block_share > 0 and rng.random() < last_block_share:
                cut = end_block_cut(rng, len(answer), block_length)
            else:
                cut = rng.randint(0, len(answer))
        candidate = rows + [(prompt, answer, cut, _fill_tokens(problem, enc['offset_mapping']))]
        width = max(len(p) for p, _, _, _ in candidate) + _span(candidate, canvas, drills)
        if rows and width * len(candidate) > token_budget:
            break
        rows = candidate
    span = _span(rows, canvas, drills)  # positions after the longest prompt
    width = max(len(p) for p, _, _, _ in rows) + span
    ids = torch.full((len(rows), width), eos, dtype=torch.long)  # [B, T]
    is_response = torch.zeros(len(rows), width, dtype=torch.bool)  # [B, T]
    starts, ends = [], []  # each row's block (block batches: test-bed rows only)
    for i, (p, a, cut, fill) in enumerate(rows):
        ids[i, : len(p)] = torch.tensor(p)
        ids[i, len(p) : len(p) + len(a)] = torch.tensor(a)
        if fill is None:
            is_response[i, len(p) :] = True
            starts.append(len(p) + cut)
            ends.append(len(p) + min(cut + block_length, span))
        else:  # a drill: its fill spans alone are maskable
            is_response[i, len(p) : len(p) + len(a)] = torch.tensor(fill)
    batch = Batch(ids, is_response, canvas, sum(len(a) for _, a, _, _ in rows), drills)
    if blocks:
        batch.block_start = torch.tensor(starts)  # [B]
        batch.block_end = torch.tensor(ends)  # [B]
    return batch


def end_block_cut(rng: random.Random, answer_len: int, block_length: int) -> int:
    """A block start whose block holds the answer's end at an offset drawn evenly in the block
    (0: the block is all EOS after the last line), as the sampler's fixed blocks meet an end that
    the prompt sets: the block batch where the model decides that the answer is over."""
    return max(0, answer_len - rng.randint(0, block_length - 1))


def _draw_drills(rng: random.Random, weights: dict[str, float]) -> bool:
    """Whether a batch is drills: as often as the drills' share of ``weights`` (no draw when the
    weights hold one kind only)."""
    share = sum(w for f, w in weights.items() if f in DRILL_FAMILIES) / sum(weights.values())
    return rng.random() < share if 0 < share < 1 else share == 1


def _span(rows: list[tuple], canvas: int, drills: bool) -> int:
    """A batch's positions after its longest prompt: the canvas, or for drills the longest
    answer and ``DRILL_PAD``."""
    return max(len(a) for _, a, _, _ in rows) + DRILL_PAD if drills else canvas


def _fill_tokens(problem: dict, offsets: list[tuple[int, int]]) -> list[bool] | None:
    """Per answer token (its character ``offsets``), whether any of its characters lies in one of
    the problem's ``fill`` spans (None: the problem has none, the whole answer is maskable). A
    token that carries a word with the space before it (" sells", " -") is the word's: a span
    that starts at the word masks it."""
    if "fill" not in problem:
        return None
    return [any(a < hi and lo < b for lo, hi in problem["fill"]) for a, b in offsets]
