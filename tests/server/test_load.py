"""Under real concurrency every output equals the same prompt's output alone, and with KV blocks for
only two whole canvases the requests queue and all complete.

The server gets 128-token blocks and 8 usable blocks (plus vLLM's null block): a canvas of
``max_model_len`` (512 tokens) takes 4 blocks, so 2 of them fit at a time; a short canvas takes 1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from server_helpers import MAX_MODEL_LEN, MODEL_NAME

BLOCK_SIZE = 128
SERVER_FLAGS = (
    "--block-size", str(BLOCK_SIZE),
    "--num-gpu-blocks-override", str(2 * MAX_MODEL_LEN // BLOCK_SIZE + 1),  # + the null block
    "--max-num-seqs", "32",
)  # fmt: skip
QUESTIONS = [
    "Ben has 4 coins. He buys 3 coins. How many coins does Ben have now?",
    "Sam has 9 apples and eats 2. How many apples are left?",
    "What is 5 plus 6?",
    "Tom reads 3 books a day for 2 days. How many books?",
]
METHODS = [
    {"method": "elastic", "gamma": 0.9, "window": 16},
    {"method": "fastdllm", "threshold": 0.9, "block_length": 16},
    {"method": "llada", "steps": 16, "block_length": 16},
    {},
]
ELASTIC = {"method": "elastic", "gamma": 0.9, "window": 16}  # any canvas length
CLIENTS, REQUESTS_PER_CLIENT, MAX_TOKENS = 32, 2, 16


def _ask(client, i: int, max_tokens: int = MAX_TOKENS, xargs: dict | None = None) -> list[int]:
    out = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        max_tokens=max_tokens,
        extra_body={
            "vllm_xargs": METHODS[i % len(METHODS)] if xargs is None else xargs,
            "return_token_ids": True,
        },
    )
    return out.choices[0].token_ids


def test_32_concurrent_clients_equal_alone(client):
    alone = {i: _ask(client, i) for i in range(len(QUESTIONS))}

    def run_client(c: int) -> list[tuple[int, list[int]]]:
        return [(c + k, _ask(client, c + k)) for k in range(REQUESTS_PER_CLIENT)]  # bounded

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for rs in pool.map(run_client, range(CLIENTS)) for r in rs]
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert sorted(i for i, _ in results) == sorted(
        c + k for c in range(CLIENTS) for k in range(REQUESTS_PER_CLIENT)
    )
    for i, tokens in results:
        assert tokens == alone[i % len(QUESTIONS)], f"request {i} differs from its prompt alone"


def test_16_requests_with_kv_for_two_canvases(client, tokenizer):
    """Whole-canvas requests (prompt + max_tokens = max_model_len) queue for blocks; all finish."""
    lengths = {}
    for i, q in enumerate(QUESTIONS):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        lengths[i] = MAX_MODEL_LEN - len(tokenizer(prompt)["input_ids"])
    n = len(QUESTIONS)
    alone = {i: _ask(client, i, lengths[i], ELASTIC) for i in range(n)}
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: _ask(client, i, lengths[i % n], ELASTIC), range(16)))
    assert len(outs) == 16
    for i, tokens in enumerate(outs):
        assert tokens == alone[i % len(QUESTIONS)]
