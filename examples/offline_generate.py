"""Offline generation with Elastic-Cache inside vLLM (the plugin is picked for LLaDAModelLM).

    python examples/offline_generate.py [MODEL_DIR]
"""

from __future__ import annotations

import sys

from vllm import LLM, SamplingParams


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "models/llada-tiny"
    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=True,
        gpu_memory_utilization=0.1,  # on the CPU this is a share of node memory for the KV cache
        additional_config={"elastic": {"gamma": 0.9}},  # engine-wide defaults
    )
    prompts = ["<|user|> 12 + 30 = ? <|assistant|>", "<|user|> def add ( a , b ) : <|assistant|>"]
    methods = ["elastic", "llada"]
    params = [
        SamplingParams(max_tokens=64, temperature=0.0, extra_args={"method": m, "window": 16})
        for m in methods
    ]
    for out, method in zip(llm.generate(prompts, params), methods):
        print(f"[{method}] {out.prompt!r} -> {out.outputs[0].text!r}")


if __name__ == "__main__":
    main()
