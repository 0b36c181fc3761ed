"""vllm-elastic: Elastic-Cache decoding for diffusion LLMs (LLaDA), as a vLLM plugin."""

__version__ = "0.1.0"
