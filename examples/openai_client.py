"""Ask a running `vllm-elastic serve` with the openai client: per-request settings, then streaming.

.venv/bin/python examples/openai_client.py [--base-url http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import argparse

from openai import OpenAI

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
args = parser.parse_args()

client = OpenAI(base_url=args.base_url, api_key="EMPTY")
model = client.models.list().data[0].id
messages = [{"role": "user", "content": "Ben has 4 coins. He buys 3 coins. How many coins now?"}]

for xargs in ({"method": "elastic", "gamma": 0.9, "window": 16}, {"method": "llada", "steps": 64}):
    out = client.chat.completions.create(
        model=model, messages=messages, max_tokens=64, extra_body={"vllm_xargs": xargs}
    )
    print(xargs["method"], repr(out.choices[0].message.content))

stream = client.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=64,
    stream=True,
    extra_body={"vllm_xargs": {"method": "elastic", "threshold": 0.9}},
)
for chunk in stream:  # text arrives as the committed prefix grows from the left
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="|", flush=True)
print()
