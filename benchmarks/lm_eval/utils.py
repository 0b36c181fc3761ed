"""Scoring of the local lm-eval tasks: the project's own scorers (``vllm_elastic.tasks``), per
document, on the completion's text as the server returns it."""

from __future__ import annotations

from vllm_elastic.tasks import score


def process_arith(doc: dict, results: list[str]) -> dict:
    """``elastic_arith``: the number after "The answer is" (else the last number) equals the answer."""
    return {"exact_match": float(score(results[0], doc))}


def process_code(doc: dict, results: list[str]) -> dict:
    """``elastic_code``: the generated function passes all of the problem's tests (a sandbox run)."""
    return {"pass_at_1": float(score(results[0], doc))}
