"""Scoring of task problems (``python -m vllm_elastic.eval --data FILE.jsonl``)."""
