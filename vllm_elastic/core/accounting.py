"""Compute accounting taken from the code path that ran (not from a formula)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ComputeStats:
    """Per-sequence counters, taken from what each step's forward ran (``generate.step``).

    nfe: forward passes this sequence took part in; rows_computed: rows computed, summed over layers;
    rows_nocache: what a no-cache decode of the same number of steps computes (N rows at every layer);
    refreshes[l]: forwards after the first in which layer l recomputed every row;
    refresh_wait_steps: steps a deferred refresh waited for its grant past the step right after
    its trigger (0 unless an engine's refresh budget delays it; core/decoders/elastic.py).
    """

    num_layers: int
    nfe: int = 0
    rows_computed: int = 0
    rows_nocache: int = 0
    refreshes: list[int] = field(default_factory=list)
    refresh_wait_steps: int = 0

    def __post_init__(self) -> None:
        if not self.refreshes:
            self.refreshes = [0] * self.num_layers

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
        }
