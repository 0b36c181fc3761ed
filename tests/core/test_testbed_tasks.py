"""The test-bed families (story, program, listing): scoring, sizes per canvas, held-out files."""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

import pytest

from vllm_elastic.tasks import (
    CANVASES,
    SIZED_FAMILIES,
    TRAINING_FAMILIES,
    held_out_path,
    load_jsonl,
    make_problem,
    make_problems,
    score,
    story,
)  # fmt: skip
from vllm_elastic.train.batches import batch_rng, sample_problems
from vllm_elastic.train.bpe import build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
FIRST_SEED = 2001  # scripts/make_test_sets.sh: seeds in family-major, canvas-minor order
SAMPLES = 300


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(seed=0)


@pytest.mark.parametrize("family", TRAINING_FAMILIES)
@pytest.mark.parametrize("canvas", CANVASES)
def test_reference_answers_score_right(family, canvas):
    rng = random.Random(canvas)
    for _ in range(5):
        problem = make_problem(family, rng, canvas)
        assert score(problem["response"], problem)


def test_wrong_answers_score_wrong():
    rng = random.Random(1)
    s = make_problem("story", rng, 256)
    assert not score(s["response"].replace(f"is {s['answer']}.", f"is {s['answer'] + 1}."), s)
    assert not score(f"{s['answer']}", s)  # the answer line is required
    p = make_problem("program", rng, 512)
    lines = p["response"].splitlines()
    assert not score("\n".join(lines[:-2] + lines[-1:]), p)  # one step left out
    assert not score(p["response"].replace("def", "df", 1), p)
    li = make_problem("listing", rng, 256)
    lines = li["response"].splitlines()
    assert not score("\n".join(lines[:-1]), li)
    assert not score("\n".join([lines[0].rsplit(" ", 1)[0] + " ten", *lines[1:]]), li)
    assert score(li["response"] + "\n", li)  # trailing whitespace is not an error


def test_sums_drill_is_independent_lines_of_story_arithmetic():
    rng = random.Random(3)
    for canvas in CANVASES:
        problem = make_problem("sums", rng, canvas)
        asks = problem["prompt"].splitlines()[1:]
        lines = problem["response"].splitlines()
        assert len(lines) == len(asks) >= 6
        for ask, line in zip(asks, lines):
            a, op, b = ask.split()
            left, result = line.split(" = ")
            assert left == ask and 1 <= int(b) <= 9
            assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            assert 0 <= int(result) <= 99
        wrong = problem["response"].replace(lines[0], lines[0][:-1] + "x")
        assert score(problem["response"], problem) and not score(wrong, problem)
    drawn = {p["task"] for s in range(20) for p in sample_problems(batch_rng(0, s), 256, 8, set())}
    # transcribe's one distance is for the start; counting is for --only, not the recipe
    assert drawn == set(TRAINING_FAMILIES) - {"transcribe", "counting"}


def test_transcribe_drill_copies_eight_lines_whose_every_slot_varies():
    rng = random.Random(5)
    names = {name for name, _, _ in story.NAMES}
    for canvas in CANVASES:
        problem = make_problem("transcribe", rng, canvas)
        header, *steps = problem["prompt"].splitlines()
        lines = problem["response"].splitlines()
        assert header == "Copy the steps:" and lines == steps and len(lines) == 8
        assert [line.split(":")[0] for line in lines] == [f"Step {k}" for k in range(1, 9)]
        words = [set(line.replace(".", "").split()) for line in lines]
        assert len({frozenset(w & set(story.ITEMS)) for w in words}) > 1  # items vary by line
        assert len(set().union(*words) & names) > 2  # so do the people
        operands = [int(w) for line in lines for w in line.split()[2:] if w.isdigit()]
        assert len(operands) == 8 and all(1 <= b <= 99 for b in operands)
        assert score(problem["response"], problem)
        assert not score(problem["response"].replace(lines[3], lines[4], 1), problem)


def test_transcribe_varied_draws_as_many_lines_as_story_has_steps():
    rng = random.Random(6)
    for canvas in CANVASES:
        counts, widths = set(), set()
        for _ in range(30):
            problem = make_problem("transcribe_varied", rng, canvas)
            header, *steps = problem["prompt"].splitlines()
            lines = problem["response"].splitlines()
            assert problem["task"] == "transcribe_varied" and header == "Copy the steps:"
            assert lines == steps
            assert [line.split(":")[0] for line in lines] == [
                f"Step {k}" for k in range(1, len(lines) + 1)
            ]
            counts.add(len(lines))
            widths.add(len(problem["prompt"]))  # the distance from a prompt line to its copy
            assert score(problem["response"], problem)
            assert not score("\n".join(lines[:-1]), problem)
        assert counts == {story.STEPS[canvas]} and len(widths) > 5


def test_recite_drill_copies_the_prompts_steps_in_order():
    rng = random.Random(4)
    for canvas in CANVASES:
        problem = make_problem("recite", rng, canvas)
        steps = [line for line in problem["prompt"].splitlines() if line.startswith("Step ")]
        lines = problem["response"].splitlines()
        assert lines == steps and len(lines) >= 2
        numbers = [int(line.split()[1].rstrip(":")) for line in lines]
        assert numbers == list(range(1, len(lines) + 1))
        assert score(problem["response"], problem)
        assert not score("\n".join(lines[1:]), problem)  # the first step left out
        assert not score(problem["response"].replace("Step 1:", "Step 2:", 1), problem)


def test_program_tests_tell_functions_apart():
    rng = random.Random(2)
    distinct = [len({y for _, y in make_problem("program", rng, 256)["tests"]}) for _ in range(200)]
    assert sum(d >= 3 for d in distinct) / len(distinct) > 0.9


def test_each_canvas_has_one_size_and_the_sizes_grow():
    """story and program: steps (the prompt's numbered lines); listing: the lines of the list.
    One size per canvas, from a few steps at 256 to dozens at 1024."""

    def size(family: str, problem: dict) -> int:
        if family == "listing":
            return len(problem["response"].splitlines())
        return sum(line[:1].isdigit() or line.startswith("Step ")
                   for line in problem["prompt"].splitlines())  # fmt: skip

    rng = random.Random(8)
    for family in SIZED_FAMILIES:
        sizes = [{size(family, make_problem(family, rng, c)) for _ in range(40)} for c in CANVASES]
        assert all(len(s) == 1 for s in sizes), (family, sizes)
        counts = [s.pop() for s in sizes]
        assert counts == sorted(counts) and counts[0] < counts[1] < counts[2], (family, counts)
        assert counts[0] >= 7 and counts[2] >= 30, (family, counts)


@pytest.mark.parametrize("family", SIZED_FAMILIES)
def test_answers_fit_their_canvas(tokenizer, family):
    """Answer + EOS fits the canvas; the long family fills at least half of it (median)."""
    rng = random.Random(3)
    for canvas in CANVASES:
        lengths = [
            len(tokenizer.encode(make_problem(family, rng, canvas)["response"]))
            for _ in range(SAMPLES)
        ]
        assert max(lengths) + 1 <= canvas
        if family == "listing":
            assert statistics.median(lengths) >= canvas / 2
    with pytest.raises(ValueError):
        make_problem(family, rng, 300)


def test_tokenizer_round_trip_and_specials(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    rng = random.Random(4)
    texts = ["def f(x):\n    x = x + 1\n\n\treturn  x  ", "  leading and trailing  \n", "12+30=42"]
    for family in SIZED_FAMILIES:
        problem = make_problem(family, rng, 512)
        texts += [problem["prompt"], problem["response"]]
    for text in texts:
        ids = loaded.encode(text, add_special_tokens=False)
        assert loaded.decode(ids) == text
    assert [loaded.bos_token_id, loaded.eos_token_id, loaded.mask_token_id] == [0, 1, 2]
    assert loaded.pad_token_id == loaded.eos_token_id
    digits = loaded.convert_ids_to_tokens(loaded.encode("4711", add_special_tokens=False))
    assert digits == ["4", "7", "1", "1"]
    chat = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True)  # fmt: skip
    assert chat == "<|user|>\nhi\n<|assistant|>\n"


def test_held_out_files_are_the_scripts_output_and_disjoint():
    seed, prompts = FIRST_SEED, {}
    for family in SIZED_FAMILIES:
        for canvas in CANVASES:
            rows = load_jsonl(ROOT / held_out_path(family, canvas))
            fresh = make_problems(family, len(rows), seed, canvas=canvas)
            for row, new in zip(rows, fresh):
                new.pop("response")
                assert row == {**json.loads(json.dumps(new)), "canvas": canvas}
            prompts[(family, canvas)] = {r["prompt"] for r in rows}
            assert len(prompts[(family, canvas)]) == len(rows)
            seed += 1
    cells = list(prompts)
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            assert not prompts[a] & prompts[b], (a, b)


def test_training_never_draws_held_out_prompts():
    held_out = set()
    for path in sorted((ROOT / "data").glob("*.jsonl")):
        held_out |= {row["prompt"] for row in load_jsonl(path)}
    drawn = set()
    for step in range(30):
        for canvas in CANVASES:
            drawn |= {p["prompt"] for p in sample_problems(batch_rng(0, step), canvas, 8, held_out)}
    assert not drawn & held_out
    # the exclusion itself: hold out what the next draw would give, and it is skipped
    (first,) = sample_problems(batch_rng(0, 0), 256, 1, set())
    (again,) = sample_problems(batch_rng(0, 0), 256, 1, {first["prompt"]})
    assert again["prompt"] != first["prompt"]


def test_probe_spans_cover_lines_and_results(tokenizer):
    from vllm_elastic.train.probe import _spans

    problem = make_problem("story", random.Random(5), 256)
    answer = problem["response"]
    ids = tokenizer.encode(answer, add_special_tokens=False)
    lines = _spans(tokenizer, answer, result_only=False)
    assert len(lines) == len(answer.split("\n"))
    assert tokenizer.decode([ids[i] for i in lines[-1]]).strip() == answer.split("\n")[-1]
    results = _spans(tokenizer, answer, result_only=True)
    want = [line.rsplit("= ", 1)[1] for line in answer.split("\n") if "= " in line]
    assert [tokenizer.decode([ids[i] for i in span]) for span in results] == want


def test_token_probe_masks_one_token_a_row(tokenizer):
    import torch
    import torch.nn.functional as F

    from vllm_elastic.train.probe import probe_tokens

    vocab, mask = len(tokenizer), tokenizer.mask_token_id

    def peek(batch):  # reads every masked token off another row, where it is visible
        seen = torch.where(batch == mask, -1, batch).max(0).values  # [T]
        return F.one_hot(seen.clamp_min(0), vocab).float()[None].expand(len(batch), -1, -1)

    def blank(batch):  # EOS everywhere
        return F.one_hot(torch.full_like(batch, tokenizer.eos_token_id), vocab).float()

    assert probe_tokens(peek, tokenizer, "story", 256, 2, 3) == 1.0
    assert probe_tokens(blank, tokenizer, "story", 256, 2, 3) == 0.0


def test_copied_tokens_are_the_step_sentences_numbers_and_names(tokenizer):
    from vllm_elastic.train.probe import _copied

    answer = (
        "Step 1: He gives 9 cookies to Paul. 47 - 9 = 38\n"
        "Step 2: Mia gives him 4 cookies. 38 + 4 = 42\n"
        "The answer is 42."
    )
    ids = tokenizer.encode(answer, add_special_tokens=False)
    got = [tokenizer.decode([ids[i]]).strip() for i in _copied(tokenizer, answer, 3)]
    assert got == ["9", "Paul", "Mia", "4"]  # not the line numbers, not the working
    first = [tokenizer.decode([ids[i]]).strip() for i in _copied(tokenizer, answer, 1)]
    assert first == ["9", "Paul"]
    drill = "Step 1: Ivy buys 37 more shells.\nStep 2: Ben gives 5 eggs to Mia."  # transcribe's
    ids = tokenizer.encode(drill, add_special_tokens=False)
    got = [tokenizer.decode([ids[i]]).strip() for i in _copied(tokenizer, drill, 3)]
    assert got == ["Ivy", "3", "7", "Ben", "5", "Mia"]


def test_copied_probe_reads_the_prompt_or_not(tokenizer):
    import torch
    import torch.nn.functional as F

    from vllm_elastic.train.probe import probe_copied

    vocab, mask = len(tokenizer), tokenizer.mask_token_id

    def peek(batch):  # reads every masked token off another row, where it is visible
        seen = torch.where(batch == mask, -1, batch).max(0).values  # [T]
        return F.one_hot(seen.clamp_min(0), vocab).float()[None].expand(len(batch), -1, -1)

    def reader(batch):  # right only while it can see the prompt (its first token)
        if (batch[:, 0] == mask).any():
            return F.one_hot(torch.full_like(batch, tokenizer.eos_token_id), vocab).float()
        return peek(batch)

    for family in ("story", "recite", "transcribe"):
        assert probe_copied(reader, tokenizer, family, 256, 2, 3, prompt_masked=False) == 1.0
        assert probe_copied(reader, tokenizer, family, 256, 2, 3, prompt_masked=True) == 0.0


@pytest.mark.parametrize("canvas", CANVASES)
def test_listing_counts_up_over_the_prompts_range(canvas):
    """Every ``listing`` answer counts up by one from the prompt's first number to its last (the
    step across a ten never depends on a direction read from the prompt)."""
    rng = random.Random(canvas)
    for _ in range(50):
        problem = make_problem("listing", rng, canvas)
        first, last = map(int, re.findall(r"\d+", problem["prompt"]))
        got = [int(line.split(":")[0]) for line in problem["response"].splitlines()]
        assert got == list(range(first, last + 1)) and "down" not in problem["prompt"]
