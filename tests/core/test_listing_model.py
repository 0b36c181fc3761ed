"""The shipped long-family LLaDA (``models/llada-listing``): its format, a tokenizer that gives back
a 1,024 answer's text exactly, and whole right answers on held-out problems at every canvas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vllm_elastic.core.settings import DecodeSettings, model_defaults
from vllm_elastic.eval.runner import load, run_problems
from vllm_elastic.tasks import held_out_path, load_jsonl

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "llada-listing"
MAX_BYTES = 50_000_000
# (method, canvas): (problems, right at least), each method at the checkpoint's own defaults
# (its generation_config.json). The first problems of data/listing_C.jsonl; the floors sit under
# what the model got on them (BENCHMARKS.md §1, "The long family on the shipped model" for llada,
# "The model's own defaults" for elastic: 8 of 8, 8 of 8 and 4 of 4), so a regression of the
# model, the tokenizer or the decoders at long canvases fails here.
FLOORS = {
    ("llada", 256): (4, 4),
    ("elastic", 256): (8, 7),
    ("elastic", 512): (8, 7),
    ("elastic", 1024): (4, 3),  # whole answers of 911 tokens, the stop included
}
# The checkpoint's Elastic-Cache defaults (scripts/train_listing.sh writes them)
SHIPPED_DEFAULTS = {
    "gamma": 0.9, "cosine": "key", "refresh_mode": "deferred", "refresh_start": "first",
}


@pytest.fixture(scope="module")
def loaded():
    return load(MODEL)


def held_out(canvas: int) -> list[dict]:
    return load_jsonl(ROOT / held_out_path("listing", canvas))


def test_checkpoint_format():
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["model_type"] == "llada" and cfg["architectures"] == ["LLaDAModelLM"]
    assert cfg["d_model"] // cfg["n_heads"] in (32, 64)  # head sizes vLLM's CPU attention accepts
    weights = MODEL / "model.safetensors"
    assert weights.stat().st_size < MAX_BYTES
    names = set(load_file(str(weights)))
    assert "model.transformer.blocks.0.q_proj.weight" in names
    assert "model.transformer.ff_out.weight" in names


def test_tokenizer_gives_back_a_long_answer(loaded):
    _, tok = loaded
    answer = held_out(1024)[0]["answer"]
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == answer
    assert 1024 // 2 <= len(ids) < 1024  # at least half the canvas, with room for the EOS
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    assert text.startswith("<|user|>") and text.rstrip().endswith("<|assistant|>")


def test_the_checkpoint_ships_its_decoding_defaults():
    assert model_defaults(MODEL) == DecodeSettings.from_dict(SHIPPED_DEFAULTS)
    assert model_defaults(MODEL) != DecodeSettings()


@pytest.mark.parametrize(("method", "canvas"), list(FLOORS))
def test_right_answers_on_held_out_problems(loaded, method, canvas):
    model, tok = loaded
    n, floor = FLOORS[method, canvas]
    s = model_defaults(MODEL).replace(method=method, gen_length=canvas)
    res = run_problems(model, tok, held_out(canvas)[:n], s, batch_size=n, progress=False)
    assert sum(res.correct) >= floor, res.outputs
