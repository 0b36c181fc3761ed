"""Compute accounting taken from the code path that ran (not from a formula)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class ComputeStats:
    """Per-sequence counters, taken from what each step's forward ran (``generate.step``).

    nfe: forward passes this sequence took part in; rows_computed: rows computed, summed over layers;
    rows_nocache: what a no-cache decode of the same number of steps computes (N rows at every layer);
    refreshes[l]: forwards after the first in which layer l recomputed every row;
    refresh_wait_steps: steps a deferred refresh waited for its grant past the step right after
    its trigger (0 unless an engine's refresh budget delays it; core/decoders/elastic.py);
    drift_tests[l], drift_sum[l], drift_min[l]: how many drift tests ran at layer l, the sum and the
    lowest of their similarities (inf: none ran), so that a user can see which gamma would fire;
    drift_fires[l]: the tests at layer l that fired (similarity below the sequence's gamma).
    """

    num_layers: int
    nfe: int = 0
    rows_computed: int = 0
    rows_nocache: int = 0
    refreshes: list[int] = field(default_factory=list)
    refresh_wait_steps: int = 0
    drift_tests: list[int] = field(default_factory=list)
    drift_sum: list[float] = field(default_factory=list)
    drift_min: list[float] = field(default_factory=list)
    drift_fires: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.refreshes:
            self.refreshes = [0] * self.num_layers
        if not self.drift_tests:
            self.drift_tests = [0] * self.num_layers
            self.drift_sum = [0.0] * self.num_layers
            self.drift_min = [math.inf] * self.num_layers
            self.drift_fires = [0] * self.num_layers

    def observe_drift(self, similarity: np.ndarray, gamma: float) -> None:
        """Count one step's drift similarities: [L] float64, NaN where a layer ran no test; a test
        below ``gamma`` fired (the decision's own comparison, policy.decide_layer)."""
        for layer in np.flatnonzero(~np.isnan(similarity)):
            value = float(similarity[layer])
            self.drift_tests[layer] += 1
            self.drift_sum[layer] += value
            self.drift_min[layer] = min(self.drift_min[layer], value)
            self.drift_fires[layer] += value < gamma

    @property
    def layer_token_fraction(self) -> float:
        """rows_computed / rows_nocache: 1.0 for the reference sampler."""
        return self.rows_computed / self.rows_nocache if self.rows_nocache else 0.0

    def to_dict(self) -> dict:
        return {
            "nfe": self.nfe,
            "rows_computed": self.rows_computed,
            "rows_nocache": self.rows_nocache,
            "layer_token_fraction": self.layer_token_fraction,
            "refreshes_per_layer": list(self.refreshes),
            "refresh_wait_steps": self.refresh_wait_steps,
            "drift_tests_per_layer": list(self.drift_tests),
            "drift_fires_per_layer": list(self.drift_fires),
            "drift_similarity_sum_per_layer": list(self.drift_sum),
            # None where no test ran (JSON has no infinity)
            "drift_similarity_min_per_layer": [
                None if math.isinf(v) else v for v in self.drift_min
            ],
        }


FLOAT_KEYS = ("drift_similarity_sum_per_layer", "drift_similarity_min_per_layer")


def same_stats(a: dict, b: dict, rel_tol: float = 1e-6) -> bool:
    """Whether two ``ComputeStats.to_dict()`` agree: every count exactly, the drift similarities
    within ``rel_tol`` (a packed batch or a head-sharded forward sums them in another order)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        if key not in FLOAT_KEYS:
            if a[key] != b[key]:
                return False
            continue
        for x, y in zip(a[key], b[key], strict=True):
            if (x is None) != (y is None):
                return False
            if x is not None and not math.isclose(x, y, rel_tol=rel_tol):
                return False
    return True
