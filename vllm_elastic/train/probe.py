"""Which part of a line has the model learned? Masked-line probes on held-out answers (cheap).

  python -m vllm_elastic.train.probe runs/train/model --canvas 256 --problems 8

For each problem the reference answer is laid out after the prompt, padded with EOS to the canvas.
For one line at a time, that line and everything after it are masked (what the sampler sees when it
reaches the line; a visible next line would give the answer away), and one forward pass and the
argmax fill the line in, all its tokens at once. A line counts when every token is right.
``story`` also gets result-only probes (just the digits after ``=``), which separate the
arithmetic from copying: ``story_results`` with everything after the result masked too, as the
sampler sees it, and ``story_results_next_visible`` with only the result masked. A model that
reads each result off the next step's left operand scores high on the second, low on the first.
``story_lines_next_visible``: each whole ``story`` line masked alone, the lines after it visible
(against ``story_lines``: whether a line fails for its own content or for what follows it).
``{family}_first_lines``: the first line of each answer alone, everything after it masked: all
that is given is the prompt (the sampler's starting point, which every later line builds on).
``sums_results``: the training drill's results, one at a time, the rest visible (its lines are
independent, so this is the state it is trained in). ``recite_lines``: the copy drill's lines
(each ``story`` step copied from the prompt, nothing worked out), ``transcribe_lines`` the other
copy drill's, ``transcribe_varied_lines`` the same with as many lines as ``story`` has steps
(the copy at any distance). ``story_tokens_alone``: each token of the first lines of ``story``
answers masked alone, everything else visible (a model that copies from its context gets the
step's words, which the prompt and the lines around repeat).
``story_copied_alone``: the same for the tokens that only the prompt holds (each step sentence's
number and name), and ``story_copied_alone_prompt_masked`` with the prompt masked as well: a model
that reads its prompt scores far higher on the first; one that guesses from answers it has seen
scores the same on both. ``recite_copied_alone``, ``transcribe_copied_alone`` and
``transcribe_varied_copied_alone``: the same on the copy drills' lines.
Whole answers under the sampler are ``curve.py``'s job; this says where the errors are long before
whole answers come out right.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from ..eval.runner import load
from ..tasks import SIZED_FAMILIES, make_problem, story
from ..tasks.prompting import encode_prompt

PROBE_SEED = 777  # fresh problems (not the held-out files): their answers are needed here
TOKEN_PROBE_LINES = 3  # story_tokens_alone: the first lines of each answer


def _spans(tokenizer, answer: str, result_only: bool) -> list[list[int]]:
    """Token indices of each line of ``answer`` (or of the digits after its last '= ')."""
    offsets = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in offsets["offset_mapping"]]
    spans, pos = [], 0
    for line in answer.split("\n"):
        lo, hi = pos, pos + len(line)
        if result_only:
            if "= " not in line:
                pos = hi + 1
                continue
            lo = pos + line.rindex("= ") + 2
        spans.append([i for i, s in enumerate(starts) if lo <= s < hi])
        pos = hi + 1
    return [s for s in spans if s]


def _probe_problems(tokenizer, family: str, canvas: int, problems: int):
    """The probe's fresh problems (the same ones every call), each with its prompt's length and
    its ids: prompt, reference answer, EOS padding to the canvas [T]."""
    rng = random.Random(PROBE_SEED)
    for _ in range(problems):
        problem = make_problem(family, rng, canvas)
        prompt = encode_prompt(tokenizer, problem["prompt"])
        answer = tokenizer.encode(problem["response"], add_special_tokens=False)
        ids = torch.tensor(prompt + answer + [tokenizer.eos_token_id] * (canvas - len(answer)))
        yield problem, len(prompt), ids


def _copied(tokenizer, answer: str, lines: int) -> list[int]:
    """Token indices of the numbers and names in the step sentences of the first ``lines`` lines
    (between ``Step k:`` and the sentence's full stop): what the answer takes from the prompt."""
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    names = {name for name, _, _ in story.NAMES}
    out, pos = [], 0
    for line in answer.split("\n")[:lines]:
        if not line.startswith("Step "):  # the closing line: worked out, not copied
            pos += len(line) + 1
            continue
        lo, hi = pos + line.find(":") + 1, pos + line.find(".")
        for i, (a, b) in enumerate(enc["offset_mapping"]):
            text = answer[a:b].strip()
            if lo <= a < hi and (text.isdigit() or text in names):
                out.append(i)
        pos += len(line) + 1
    return out


def _fill_each_alone(model, mask_id: int, ids: torch.Tensor, cols: list[int], hide: int = 0):
    """The model's guess [C] at each of ``cols``, masked alone in its own copy of ``ids`` [T]
    (with the first ``hide`` positions masked in every copy)."""
    batch = ids.repeat(len(cols), 1)  # [C, T] one masked token per row
    batch[range(len(cols)), cols] = mask_id
    batch[:, :hide] = mask_id
    return model(batch).argmax(-1)[range(len(cols)), cols]


@torch.no_grad()
def probe_copied(
    model, tokenizer, family: str, canvas: int, problems: int, lines: int, prompt_masked: bool
) -> float:
    """Share of the copied tokens of ``family``'s answers (``_copied``: ``story`` or a copy
    drill's) filled in right, each masked alone; ``prompt_masked``: the prompt masked too (what
    the model knows without reading it)."""
    right = total = 0
    for problem, start, ids in _probe_problems(tokenizer, family, canvas, problems):
        cols = [start + i for i in _copied(tokenizer, problem["response"], lines)]
        hide = start if prompt_masked else 0
        guess = _fill_each_alone(model, tokenizer.mask_token_id, ids, cols, hide)  # [C]
        right += int((guess == ids[cols]).sum())
        total += len(cols)
    return right / max(1, total)


@torch.no_grad()
def probe(
    model, tokenizer, family: str, canvas: int, problems: int, result_only: bool, tail: bool = True,
    first_only: bool = False,
) -> float:
    """Share of spans filled in right; ``tail``: everything after the span is masked too;
    ``first_only``: each answer's first span alone (its first line: only the prompt to go on)."""
    right = total = 0
    for problem, start, ids in _probe_problems(tokenizer, family, canvas, problems):
        spans = _spans(tokenizer, problem["response"], result_only)
        spans = spans[:1] if first_only else spans
        batch = ids.repeat(len(spans), 1)  # [S, T] one masked line (and what follows) per row
        for row, span in enumerate(spans):
            if tail:
                batch[row, start + span[0] :] = tokenizer.mask_token_id
            else:
                batch[row, [start + i for i in span]] = tokenizer.mask_token_id
        guess = model(batch).argmax(-1)  # [S, T]
        for row, span in enumerate(spans):
            cols = [start + i for i in span]
            right += bool((guess[row, cols] == ids[cols]).all())
            total += 1
    return right / max(1, total)


@torch.no_grad()
def probe_tokens(
    model, tokenizer, family: str, canvas: int, problems: int, lines: int, show: int = 0
) -> float:
    """Share of the first ``lines`` lines' tokens filled in right, each masked alone with everything
    else visible: the easiest state there is (every neighbour given, the prompt too). ``show``:
    print the first that many problems' lines as they are and as filled in, token by token."""
    right = total = 0
    for n, (problem, start, ids) in enumerate(
        _probe_problems(tokenizer, family, canvas, problems)
    ):
        cols = [start + i for span in _spans(tokenizer, problem["response"], False)[:lines]
                for i in span]  # fmt: skip
        guess = _fill_each_alone(model, tokenizer.mask_token_id, ids, cols)  # [C]
        right += int((guess == ids[cols]).sum())
        total += len(cols)
        if n < show:
            print(f"{family} tokens alone, as written: {tokenizer.decode(ids[cols])!r}")
            print(f"{family} tokens alone, filled in:  {tokenizer.decode(guess)!r}")
    return right / max(1, total)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--canvas", type=int, default=256)
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--show", type=int, default=0,
                   help="print this many problems' story_tokens_alone lines, as written and filled")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    row = {"model": args.model, "canvas": args.canvas, "problems": args.problems}
    for family in (*SIZED_FAMILIES, "recite", "transcribe", "transcribe_varied"):
        row[f"{family}_lines"] = probe(model, tokenizer, family, args.canvas, args.problems, False)
        row[f"{family}_first_lines"] = probe(
            model, tokenizer, family, args.canvas, args.problems, False, first_only=True
        )
    row["story_results"] = probe(model, tokenizer, "story", args.canvas, args.problems, True)
    row["story_results_next_visible"] = probe(
        model, tokenizer, "story", args.canvas, args.problems, True, tail=False
    )
    row["story_lines_next_visible"] = probe(
        model, tokenizer, "story", args.canvas, args.problems, False, tail=False
    )
    row["story_tokens_alone"] = probe_tokens(
        model, tokenizer, "story", args.canvas, args.problems, TOKEN_PROBE_LINES, args.show
    )
    for family, masked in (("story", False), ("story", True), ("recite", False),
                           ("transcribe", False), ("transcribe_varied", False)):  # fmt: skip
        key = f"{family}_copied_alone" + ("_prompt_masked" if masked else "")
        row[key] = probe_copied(
            model, tokenizer, family, args.canvas, args.problems, TOKEN_PROBE_LINES, masked
        )
    row["sums_results"] = probe(
        model, tokenizer, "sums", args.canvas, args.problems, True, tail=False
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
