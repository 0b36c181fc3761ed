"""Scoring of the local ``elastic_arith`` task: the project's arith scorer, per document."""

from __future__ import annotations

from vllm_elastic.tasks.arith import score


def process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(score(results[0], doc))}
