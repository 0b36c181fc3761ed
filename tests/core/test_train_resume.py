"""The test-bed trainer: a run stopped and resumed equals one that ran straight through."""

from __future__ import annotations

import json

import pytest
import torch

from vllm_elastic.core.checkpoint import load_model
from vllm_elastic.train import testbed
from vllm_elastic.train.curve import score_snapshot, snapshots
from vllm_elastic.train.objective import noise
from vllm_elastic.train.testbed import parse_args, run_progress, train

TINY = ["--d-model", "64", "--n-layers", "2", "--n-heads", "1", "--mlp", "128", "--batch-tokens", "1",
        "--steps", "3", "--warmup", "1", "--keep-every", "0", "--threads", "1", "--log-every", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # train() sets the thread count process-wide
    yield
    torch.set_num_threads(threads)


def _run(out, *extra):
    train(parse_args(["--out", str(out), *TINY, *extra]))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    _run(tmp_path / "straight")
    _run(tmp_path / "split", "--stop-after", "2")
    assert (
        json.loads((tmp_path / "split" / "train_log.jsonl").read_text().splitlines()[-1])["step"]
        == 1
    )
    _run(tmp_path / "split")
    a, b = load_model(tmp_path / "straight" / "model"), load_model(tmp_path / "split" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert snapshots(tmp_path / "straight") == [(3, tmp_path / "straight" / "model")]
    (row,) = score_snapshot(tmp_path / "straight" / "model", [("listing", 256)], limit=1)
    assert row["accuracy"] == 0.0 and row["problems"] == 1  # 3 updates learn no list
    assert row["median_answer_tokens"] <= 256
    with pytest.raises(ValueError, match="steps"):
        train(parse_args(["--out", str(tmp_path / "split"), *TINY, "--steps", "5"]))


def test_noise_keeps_prompt_and_prefix_clean():
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(40).repeat(64, 1)  # [B, T]
    is_response = torch.zeros(64, 40, dtype=torch.bool)
    is_response[:, 10:] = True
    masked, t = noise(ids, is_response, prefix_share=0.0, gen=gen)
    assert not masked[:, :10].any() and masked.any()
    assert t.min() > 0 and t.max() <= 1
    masked, _ = noise(ids, is_response, prefix_share=1.0, gen=gen)
    first = torch.where(masked.any(1), masked.float().argmax(1), torch.full((64,), 40))  # [B]
    assert (first >= 10).all() and (first > 10).float().mean() > 0.5  # a clean prefix, mostly


def test_a_further_stage_starts_from_the_init_model(tmp_path):
    """``--init`` trains on from a model's weights and tokenizer; ``--progress-from`` starts the
    curricula there. At a learning rate of 0 the model stays the init model, bit for bit."""
    _run(tmp_path / "first")
    first = tmp_path / "first" / "model"
    _run(tmp_path / "still", "--init", str(first), "--progress-from", "0.5", "--lr", "0")
    a, b = load_model(first), load_model(tmp_path / "still" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    _run(tmp_path / "second", "--init", str(first), "--progress-from", "0.5")
    c = load_model(tmp_path / "second" / "model")
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert run_progress(0, parse_args(["--progress-from", "0.31"])) == 0.31
    assert run_progress(4500, parse_args(["--progress-from", "0.31"])) == 1.0
    with pytest.raises(SystemExit):  # argparse's error: a stage cannot start past the end
        parse_args(["--progress-from", "1"])
    with pytest.raises(ValueError, match="progress_from"):  # a resumed run keeps its curricula
        _run(tmp_path / "second", "--init", str(first), "--progress-from", "0.2")


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (the CPU run is above)"
)
def test_a_run_started_on_a_gpu_resumes_on_the_host(tmp_path):
    """The masks are drawn on the host, so the GPU run and the CPU run train on the same batches:
    the weights agree to float32 rounding, and a GPU run's state resumes on the CPU."""
    _run(tmp_path / "cpu")
    _run(tmp_path / "gpu", "--device", "cuda", "--stop-after", "2")
    _run(tmp_path / "gpu")  # the last update on the host
    a, b = load_model(tmp_path / "cpu" / "model"), load_model(tmp_path / "gpu" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4, msg=name)


def _held_out_file(directory, name: str, prompt: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(json.dumps({"prompt": prompt, "answer": "1"}) + "\n")


def test_resume_refuses_held_out_files_that_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trainer reads --held-out as a glob under the working dir
    held = ["--held-out", "held/*.jsonl"]
    _held_out_file(tmp_path / "held", "a.jsonl", "List the numbers from 100 up to 127.")
    _run(tmp_path / "run", *held, "--stop-after", "1")
    _run(tmp_path / "run", *held, "--stop-after", "2")  # the same files: it goes on
    _held_out_file(tmp_path / "held", "b.jsonl", "List the numbers from 200 up to 227.")
    with pytest.raises(ValueError, match="held-out files"):
        _run(tmp_path / "run", *held)


def test_a_run_stops_when_the_held_out_files_change_under_it(tmp_path, monkeypatch):
    reads = iter([{"a"}, {"a", "b"}])  # the files at the run's start, then at its first save
    monkeypatch.setattr(testbed, "held_out_prompts", lambda pattern: next(reads))
    with pytest.raises(ValueError, match="held-out files"):
        _run(tmp_path / "run")
    assert not (tmp_path / "run" / "state.pt").exists()  # nothing saved past the change
