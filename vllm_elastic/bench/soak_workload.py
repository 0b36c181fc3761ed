"""The soak test's requests: a seeded mix of methods, settings, canvas lengths, APIs, streaming,
clients that drop their stream, and bad requests (each must get a 400).

Good requests are drawn from a pool of distinct ``Spec``s (prompt, API, method, settings,
max_tokens), so that the sequential replay that checks every answer against the one it gets alone
asks each distinct request once. What varies per send (streaming, dropping the stream) does not
change the answer. Every good request uses ``refresh_mode="immediate"``: its answer does not depend
on what else the server runs (a ``deferred`` refresh waits for the scheduler's grant).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

QUESTIONS = (
    "Ben has 4 coins. He buys 3 coins. How many coins does Ben have now?",
    "Sam has 9 apples and eats 2. How many apples are left?",
    "What is 5 plus 6?",
    "Tom reads 3 books a day for 2 days. How many books?",
    "Write a Python function f(x) that returns x plus 4.",
    "A box holds 7 pens. Ann adds 5 pens. How many pens are in the box?",
)
BLOCK_LENGTH = 32  # llada's and fastdllm's default block_length
BAD_REQUESTS = (  # (what is wrong, body changes); each must be answered with HTTP 400
    ("unknown method", {"vllm_xargs": {"method": "beam"}}),
    ("gamma above 1", {"vllm_xargs": {"method": "elastic", "gamma": 1.5}}),
    ("window 0", {"vllm_xargs": {"method": "elastic", "window": 0}}),
    ("threshold 0", {"vllm_xargs": {"threshold": 0}}),
    ("gamma not a number", {"vllm_xargs": {"gamma": "high"}}),
    ("unknown setting", {"vllm_xargs": {"gama": 0.5}}),
    ("max_steps 0", {"vllm_xargs": {"max_steps": 0}}),
    ("llada steps 0", {"max_tokens": 64, "vllm_xargs": {"method": "llada", "steps": 0}}),
    ("logprobs with echo", {"echo": True, "logprobs": 1}),
    ("canvas beyond max_model_len", {"max_tokens": 100_000}),
    ("mask token in the prompt", {"prompt": "What is <|mdm_mask|> plus 2?"}),
)


@dataclass(slots=True, frozen=True)
class Spec:
    """One distinct good request: what decides its answer."""

    api: str  # "completions" | "chat"
    question: str
    max_tokens: int
    xargs: tuple[tuple[str, Any], ...]  # vllm_xargs, sorted items (hashable)

    def body(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": self.max_tokens,
            "vllm_xargs": dict(self.xargs),
            "return_token_ids": True,
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": self.question}]
        else:
            body["prompt"] = f"<|user|> {self.question} <|assistant|>"
        return body


@dataclass(slots=True)
class Send:
    """One request of the load: a good spec or a bad body, and how the client sends it."""

    index: int
    spec: Spec | None  # None: a bad request
    bad: tuple[str, dict[str, Any]] | None = None
    stream: bool = False
    drop_after_chunks: int | None = None  # close the stream after this many chunks

    def body(self, model: str) -> dict[str, Any]:
        if self.spec is not None:
            body = self.spec.body(model)
        else:
            body = {"model": model, "max_tokens": 32, "prompt": f"<|user|> {QUESTIONS[0]}"}
            body.update(self.bad[1])
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @property
    def path(self) -> str:
        chat = self.spec is not None and self.spec.api == "chat"
        return "/v1/chat/completions" if chat else "/v1/completions"  # bad: a prompt body


def canvas_lengths(method: str, limit: int) -> list[int]:
    """The max_tokens a method's requests draw from: any length from 1 to ``limit`` (a last block
    shorter than block_length is decoded like the others)."""
    return list(range(1, limit + 1))


def draw_settings(rng: random.Random, method: str, max_tokens: int) -> dict[str, Any]:
    """Per-request settings of a method, as a client would send them in ``vllm_xargs``."""
    xargs: dict[str, Any] = {"method": method}
    if method == "elastic":
        xargs.update(
            gamma=rng.choice([0.7, 0.9, 0.95]),
            window=rng.choice([4, 16, 32]),
            threshold=rng.choice([0.5, 0.9]),
            refresh_mode="immediate",
            block_caching=rng.choice([True, True, False]),
        )
    elif method == "fastdllm":
        xargs.update(threshold=rng.choice([0.7, 0.9]), cache=rng.choice(["prefix", "dual"]))
    else:
        blocks = -(-max_tokens // BLOCK_LENGTH)
        steps = rng.choice([s for s in (blocks, 2 * blocks, 8 * blocks) if s <= max_tokens] or [1])
        xargs.update(steps=steps)  # a few tokens per step, not the slow one-per-step default
    return xargs


def spec_pool(seed: int, size: int, max_canvas: int) -> list[Spec]:
    """``size`` distinct good requests; max_tokens spread from 1 to ``max_canvas``
    (canvases are capped so that a question's prompt + max_tokens fits max_model_len)."""
    rng = random.Random(seed)
    pool: dict[Spec, None] = {}
    methods = ("llada", "fastdllm", "elastic")
    while len(pool) < size:
        method = methods[len(pool) % len(methods)]
        lengths = canvas_lengths(method, max_canvas)
        # half short, half anywhere up to the limit: long canvases are slow on a CPU
        short = [n for n in lengths if n <= lengths[0] + 3 * BLOCK_LENGTH] or lengths
        max_tokens = rng.choice(short if rng.random() < 0.5 else lengths)
        if len(pool) < 2 * len(methods):  # each method's shortest and longest canvas, always
            max_tokens = lengths[0] if len(pool) < len(methods) else lengths[-1]
        xargs = draw_settings(rng, method, max_tokens)
        spec = Spec(
            api=rng.choice(["completions", "chat"]),
            question=rng.choice(QUESTIONS),
            max_tokens=max_tokens,
            xargs=tuple(sorted(xargs.items())),
        )
        pool[spec] = None
    return list(pool)


def draw_sends(rng: random.Random, pool: list[Spec], start: int, n: int) -> list[Send]:
    """``n`` sends: about 1 in 8 bad, 1 in 8 a stream the client drops, half the rest streamed."""
    sends = []
    for i in range(start, start + n):
        roll = rng.random()
        if roll < 0.125:
            sends.append(Send(i, None, bad=rng.choice(BAD_REQUESTS)))
        elif roll < 0.25:
            spec = rng.choice(pool)
            sends.append(Send(i, spec, stream=True, drop_after_chunks=rng.randint(0, 2)))
        else:
            sends.append(Send(i, rng.choice(pool), stream=rng.random() < 0.5))
    return sends
