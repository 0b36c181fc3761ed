"""The ``--engine vllm`` driver of the bench: the same problems and settings through ``vllm.LLM``.

One engine per bench process; each row's method and settings travel per request in
``SamplingParams.extra_args`` (every ``DecodeSettings`` field, so the engine-wide defaults do not
matter) and ``max_tokens`` is the canvas length. Prompts are encoded exactly as the reference
engine encodes them (``tasks.prompting.encode_prompt``) and sent as token ids, and outputs are cut
at the first EOS and decoded the same way, so the two engines' ``outputs`` compare one to one.

Concurrency C: at most C requests in flight. The engine is built with ``max_num_seqs`` = the largest
C of the run, and each row submits through ``LLMEngine.add_request`` / ``step`` keeping C requests
in flight (a new one as soon as one finishes). NFE, layer-row fraction and refreshes come from the
runner's per-request stats (``plugin/stats.py``). vLLM is imported here only, lazily, so that
``--engine reference`` never imports it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from tqdm import tqdm

from ..core.settings import DecodeSettings
from ..eval.runner import RunResult
from ..tasks import score
from ..tasks.prompting import encode_prompt

DEFAULT_CPU_KV_GIB = "2"  # vLLM's CPU default reserves 92% of RAM for KV; a bench needs far less


def sampling_params(settings: DecodeSettings) -> Any:
    """One request's ``SamplingParams``: every setting in extra_args, gen_length as max_tokens."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    extra = {k: v for k, v in dataclasses.asdict(settings).items() if k != "gen_length"}
    return SamplingParams(
        max_tokens=settings.gen_length,
        extra_args=extra,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


class VLLMBench:
    """A ``vllm.LLM`` on ``model_dir`` (float32, like the reference) and the tokenizer it uses."""

    def __init__(
        self, model_dir: str, max_num_seqs: int, canvas: int | None = None, **engine_kwargs: Any
    ) -> None:
        """``canvas``: the longest canvas (prompt + max_tokens) of the runs; ``max_num_batched_tokens``
        then fits every in-flight request's whole canvas in one step (a step's rows are what the
        scheduler books, and a request's first step computes its whole canvas), as an operator
        sets it for a batch of ``max_num_seqs``; otherwise vLLM's default bounds the batch."""
        if canvas is not None:
            engine_kwargs.setdefault("max_num_batched_tokens", max_num_seqs * canvas)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KV_GIB)  # ignored on GPU
        from transformers import AutoTokenizer
        from vllm import LLM

        from ..plugin.stats import RPC_METHOD

        self.rpc_method = RPC_METHOD
        self.llm = LLM(
            model=model_dir,
            dtype="float32",
            enforce_eager=True,  # the runner bypasses the model's forward: nothing to capture
            max_num_seqs=max_num_seqs,
            **engine_kwargs,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.eos_id: int = self.llm.llm_engine.model_config.hf_config.eos_token_id
        self.rows_run = 0

    def run(
        self,
        problems: list[dict],
        settings: DecodeSettings,
        concurrency: int,
        chat: bool = True,
        desc: str = "",
    ) -> RunResult:
        """Decode ``problems`` with at most ``concurrency`` in flight; score them in order."""
        prompts = [encode_prompt(self.tokenizer, p["prompt"], chat) for p in problems]
        params = sampling_params(settings)
        if self.rows_run == 0:  # warm-up, untimed: first-call costs stay out of the first row
            self._decode(prompts[:1], params, 1, f"warmup-{id(self)}", None)
        tag = f"bench{self.rows_run}"
        self.rows_run += 1
        bar = tqdm(total=len(prompts), desc=desc or settings.method, unit="prompt")
        start = time.perf_counter()
        tokens = self._decode(prompts, params, concurrency, tag, bar)
        wall_s = time.perf_counter() - start
        bar.close()
        stats = self._stats([f"{tag}-{i}" for i in range(len(prompts))])
        res = RunResult([], [], 0, wall_s, [], 0, 0)
        for problem, toks, st in zip(problems, tokens, stats):
            cut = toks[: toks.index(self.eos_id)] if self.eos_id in toks else toks
            text = self.tokenizer.decode(cut, skip_special_tokens=True)
            res.outputs.append(text)
            res.correct.append(score(text, problem))
            res.output_tokens += len(cut)
            res.add_stats(st)
        return res

    def _decode(
        self, prompts: list[list[int]], params: Any, concurrency: int, tag: str, bar: tqdm | None
    ) -> list[list[int]]:
        """Generated token ids per prompt, keeping at most ``concurrency`` requests in flight."""
        engine = self.llm.llm_engine
        index = {f"{tag}-{i}": i for i in range(len(prompts))}
        tokens: list[list[int] | None] = [None] * len(prompts)
        next_i, in_flight = 0, 0
        while next_i < len(prompts) or in_flight:
            while next_i < len(prompts) and in_flight < concurrency:
                engine.add_request(f"{tag}-{next_i}", {"prompt_token_ids": prompts[next_i]}, params)
                next_i, in_flight = next_i + 1, in_flight + 1
            for out in engine.step():
                if out.finished and out.request_id in index:
                    tokens[index[out.request_id]] = list(out.outputs[0].token_ids)
                    in_flight -= 1
                    if bar is not None:
                        bar.update(1)
        return [t if t is not None else [] for t in tokens]

    def _stats(self, request_ids: list[str]) -> list[dict]:
        (found, *_) = self.llm.collective_rpc(self.rpc_method, args=(request_ids,))
        missing = [rid for rid, st in zip(request_ids, found) if st is None]
        if missing:
            raise RuntimeError(f"the workers have no compute stats for requests {missing[:5]}")
        return found
