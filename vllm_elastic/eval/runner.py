"""Run a decoder over task problems and score the outputs (shared by ``eval`` and ``bench``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.checkpoint import load_model
from ..core.generate import generate
from ..core.model import LLaDAModel
from ..core.settings import DecodeSettings
from ..tasks import score
from ..tasks.prompting import encode_prompt


@dataclass(slots=True)
class RunResult:
    """One method over a list of problems: outputs in problem order and aggregate counters."""

    outputs: list[str]
    correct: list[bool]
    output_tokens: int
    wall_s: float
    nfe: list[int]
    rows_computed: int
    rows_nocache: int
    refreshes_per_layer: list[int] = field(default_factory=list)
    refresh_wait_steps: int = 0  # deferred refresh: steps refreshes waited for a grant, summed
    drift_tests: list[int] = field(default_factory=list)  # per layer, over every sequence
    drift_fires: list[int] = field(default_factory=list)  # the tests that fired, per layer
    drift_sum: list[float] = field(default_factory=list)
    drift_min: list[float | None] = field(default_factory=list)  # None: no test at that layer

    def add_stats(self, stats: dict) -> None:
        """Add one sequence's ``ComputeStats.to_dict()`` to the counters."""
        self.nfe.append(stats["nfe"])
        self.rows_computed += stats["rows_computed"]
        self.rows_nocache += stats["rows_nocache"]
        self.refresh_wait_steps += stats["refresh_wait_steps"]
        refreshes, tests = stats["refreshes_per_layer"], stats["drift_tests_per_layer"]
        sums = stats["drift_similarity_sum_per_layer"]
        mins = stats["drift_similarity_min_per_layer"]
        if not self.refreshes_per_layer:
            num_layers = len(refreshes)
            self.refreshes_per_layer, self.drift_tests = [0] * num_layers, [0] * num_layers
            self.drift_fires = [0] * num_layers
            self.drift_sum, self.drift_min = [0.0] * num_layers, [None] * num_layers
        self.refreshes_per_layer = [a + b for a, b in zip(self.refreshes_per_layer, refreshes)]
        self.drift_tests = [a + b for a, b in zip(self.drift_tests, tests)]
        self.drift_fires = [a + b for a, b in zip(self.drift_fires, stats["drift_fires_per_layer"])]
        self.drift_sum = [a + b for a, b in zip(self.drift_sum, sums)]
        self.drift_min = [
            b if a is None else a if b is None else min(a, b) for a, b in zip(self.drift_min, mins)
        ]

    @property
    def drift_mean(self) -> list[float | None]:
        """Per layer, the mean drift similarity over every test (None: no test ran there)."""
        return [s / n if n else None for s, n in zip(self.drift_sum, self.drift_tests)]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    @property
    def layer_token_fraction(self) -> float:
        return self.rows_computed / self.rows_nocache if self.rows_nocache else 0.0


def load(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoTokenizer

    from ..plugin.hf_config import register_hf_config

    register_hf_config()  # AutoTokenizer reads config.json: without it, transformers warns
    return load_model(model_dir, dtype=dtype), AutoTokenizer.from_pretrained(str(model_dir))


def run_problems(
    model: LLaDAModel,
    tokenizer,
    problems: list[dict],
    settings: DecodeSettings,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = True,
    desc: str = "",
) -> RunResult:
    """Decode ``problems`` in batches of ``batch_size`` and score each output."""
    prompts = [encode_prompt(tokenizer, p["prompt"], chat) for p in problems]
    res = RunResult([], [], 0, 0.0, [], 0, 0)
    bar = tqdm(
        total=len(prompts), desc=desc or settings.method, disable=not progress, unit="prompt"
    )
    for lo in range(0, len(prompts), batch_size):
        start = time.perf_counter()
        results = generate(model, prompts[lo : lo + batch_size], settings)
        res.wall_s += time.perf_counter() - start
        for problem, r in zip(problems[lo : lo + batch_size], results):
            text = tokenizer.decode(r.tokens, skip_special_tokens=True)
            res.outputs.append(text)
            res.correct.append(score(text, problem))
            res.output_tokens += len(r.tokens)
            res.add_stats(r.stats.to_dict())
        bar.update(len(results))
        bar.set_postfix(acc=f"{res.accuracy:.3f}")
    bar.close()
    return res
