"""Training batches for the test-bed model: problems drawn on the fly, one canvas per batch.

Every batch is a pure function of (seed, step), so a run resumed from a checkpoint sees exactly the
batches an uninterrupted run would. A batch holds problems sized for one canvas (256, 512 or 1024),
each answer padded with EOS to the canvas, as the sampler's canvas is at inference. The number of
sequences follows a token budget, so a step costs about the same at every canvas. The curriculum
moves weight from short to long canvases as training goes on; short ones stay in the mix. The
first 10% of the steps draw the ``sums`` drill alone, then every training family equally.

A block batch (a ``block_share`` of the batches) also marks in each sequence one block of
``block_length`` positions, starting at a uniformly drawn point of the answer (its end included):
the objective decodes that block with everything after it masked, as the sampler does. A problem
with ``fill`` spans (the ``sums`` drill) has them alone maskable, and its block is its whole answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..tasks import CANVASES, TRAINING_FAMILIES, make_problem
from ..tasks.prompting import encode_prompt

CHAT_SHARE = 0.5  # the rest of the prompts are raw, as a /v1/completions client sends them
SMALLER_SHARE = 0.2  # problems sized for a smaller canvas, padded to this one (short answers)
# (progress at which a phase starts, canvas weights): answer length grows over the run.
CURRICULUM = (
    (0.0, {256: 0.75, 512: 0.25, 1024: 0.0}),
    (0.25, {256: 0.45, 512: 0.35, 1024: 0.2}),
    (0.55, {256: 0.3, 512: 0.35, 1024: 0.35}),
)
# (progress at which a phase starts, family weights): the sums drill alone first. Its table is the
# slowest thing to learn and the story family needs it. Alone, the drill reached 79% of results in
# 400 updates; drawn with the other families (a quarter, or 55% for the first 675 updates) it was
# at 10% at update 1,000 (docs/TRAINING.md).
FAMILY_CURRICULUM = (
    (0.0, {"sums": 1.0}),
    (0.1, {"story": 0.25, "program": 0.25, "listing": 0.25, "sums": 0.25}),
)


@dataclass(slots=True)
class Batch:
    ids: torch.Tensor  # [B, T] prompt, answer, EOS padding to the canvas
    is_response: torch.Tensor  # [B, T] what the objective may mask: the answer and its EOS padding,
    # or, for a problem with ``fill`` spans (a drill), those spans alone
    canvas: int
    answer_tokens: int  # answer tokens in the batch, EOS padding excluded
    block_start: torch.Tensor | None = None  # [B] first block position (block batches only)
    block_end: torch.Tensor | None = None  # [B] first position after the block


def phase_weights(curriculum, progress: float) -> dict:
    """A curriculum's weights at ``progress`` in [0, 1]: those of the last phase started."""
    current = curriculum[0][1]
    for start, weights in curriculum:
        if progress >= start:
            current = weights
    return current


def canvas_weights(progress: float) -> dict[int, float]:
    return phase_weights(CURRICULUM, progress)


def batch_rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


def sample_problems(
    rng: random.Random, canvas: int, n: int, held_out: set[str], progress: float = 1.0,
    only: tuple[str, ...] = (),
) -> list[dict]:
    """n problems for ``canvas``, families by ``FAMILY_CURRICULUM`` at ``progress`` (or ``only``
    these, equally: an experiment on part of the mixture), none of them in ``held_out``."""
    smaller = [c for c in CANVASES if c < canvas]
    weights = {f: 1.0 for f in only} or phase_weights(FAMILY_CURRICULUM, progress)
    families = [f for f in TRAINING_FAMILIES if weights.get(f, 0.0) > 0]
    out = []
    while len(out) < n:
        size = rng.choice(smaller) if smaller and rng.random() < SMALLER_SHARE else canvas
        family = rng.choices(families, [weights[f] for f in families])[0]
        problem = make_problem(family, rng, size)
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
    first_block_share: float = 0.0,
) -> Batch:
    """``first_block_share``: that share of a block batch's rows start their block at the
    answer's first token (the line written from the prompt alone)."""
    rng = batch_rng(seed, step)
    weights = canvas_weights(progress)
    canvas = rng.choices(list(weights), list(weights.values()))[0]
    blocks = rng.random() < block_share
    eos = tokenizer.eos_token_id
    rows: list[tuple] = []  # (prompt, answer, block start in the answer, fill tokens or None)
    while True:  # grow the batch until the next sequence would pass the budget
        (problem,) = sample_problems(rng, canvas, 1, held_out, progress, only)
        prompt = encode_prompt(tokenizer, problem["prompt"], chat=rng.random() < CHAT_SHARE)
        enc = tokenizer(problem["response"], add_special_tokens=False, return_offsets_mapping=True)
        answer = enc["input_ids"]
        if len(answer) >= canvas:
            raise ValueError(
                f"a {problem['task']} answer of {len(answer)} tokens overflows {canvas}"
            )
        cut = 0
        if blocks:  # (no draw for the share when it is 0: the batches stay those of before)
            first = first_block_share > 0 and rng.random() < first_block_share
            cut = 0 if first else rng.randint(0, len(answer))
        candidate = rows + [(prompt, answer, cut, _fill_tokens(problem, enc['offset_mapping']))]
        width = max(len(p) for p, _, _, _ in candidate) + canvas
        if rows and width * len(candidate) > token_budget:
            break
        rows = candidate
    width = max(len(p) for p, _, _, _ in rows) + canvas
    ids = torch.full((len(rows), width), eos, dtype=torch.long)  # [B, T]
    is_response = torch.zeros(len(rows), width, dtype=torch.bool)  # [B, T]
    starts, ends = [], []  # each row's block (used by block batches only)
    for i, (p, a, cut, fill) in enumerate(rows):
        ids[i, : len(p)] = torch.tensor(p)
        ids[i, len(p) : len(p) + len(a)] = torch.tensor(a)
        if fill is None:
            is_response[i, len(p) :] = True
            starts.append(len(p) + cut)
            ends.append(len(p) + min(cut + block_length, canvas))
        else:  # a drill: its fill spans alone are maskable, and its block is its whole answer
            is_response[i, len(p) : len(p) + len(a)] = torch.tensor(fill)
            starts.append(len(p))
            ends.append(len(p) + canvas)
    batch = Batch(ids, is_response, canvas, sum(len(a) for _, a, _, _ in rows))
    if blocks:
        batch.block_start = torch.tensor(starts)  # [B]
        batch.block_end = torch.tensor(ends)  # [B]
    return batch


def _fill_tokens(problem: dict, offsets: list[tuple[int, int]]) -> list[bool] | None:
    """Per answer token (its character ``offsets``), whether it starts inside one of the problem's
    ``fill`` spans (None: the problem has none, the whole answer is maskable)."""
    if "fill" not in problem:
        return None
    return [any(lo <= a < hi for lo, hi in problem["fill"]) for a, _ in offsets]
