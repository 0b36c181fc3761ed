"""Throughput and accuracy of the decoding methods on the same prompts (``python -m vllm_elastic.bench``)."""
