"""Elastic-Cache counters of a running server, read from its ``/metrics`` (Prometheus text).

The bench scrapes before and after each row; the difference is the row's NFE, layer-row fraction
and refreshes per layer, provided nothing else talks to the server meanwhile (``requests`` of the
difference says how many finished requests the numbers cover). Histograms are read by their
``_sum`` / ``_count`` samples; a layer that never refreshed has no sample (vLLM's counters appear
on first increment) and counts 0. The server exports these only with ``VLLM_PLUGINS=elastic``.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass, field

PREFIX = "vllm_elastic:"
_SAMPLE = re.compile(r"^(vllm_elastic:[A-Za-z_:]+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)
_LAYER = re.compile(r'layer="(\d+)"')
SCRAPE_TIMEOUT_S = 30.0


@dataclass(slots=True)
class ElasticCounters:
    """Sums of the server's Elastic-Cache metrics at one scrape (or a difference of two)."""

    found: bool = False  # the server exports the metrics at all
    requests: float = 0.0
    nfe_sum: float = 0.0
    nfe_count: float = 0.0
    fraction_sum: float = 0.0
    fraction_count: float = 0.0
    refreshes: dict[int, float] = field(default_factory=dict)  # layer -> refreshes started there

    def minus(self, before: ElasticCounters) -> ElasticCounters:
        layers = set(self.refreshes) | set(before.refreshes)
        return ElasticCounters(
            found=self.found,
            requests=self.requests - before.requests,
            nfe_sum=self.nfe_sum - before.nfe_sum,
            nfe_count=self.nfe_count - before.nfe_count,
            fraction_sum=self.fraction_sum - before.fraction_sum,
            fraction_count=self.fraction_count - before.fraction_count,
            refreshes={
                k: self.refreshes.get(k, 0.0) - before.refreshes.get(k, 0.0) for k in layers
            },
        )

    def nfe_mean(self) -> float | None:
        return self.nfe_sum / self.nfe_count if self.nfe_count else None

    def fraction_mean(self) -> float | None:
        return self.fraction_sum / self.fraction_count if self.fraction_count else None

    def refreshes_per_layer(self, num_layers: int) -> list[int]:
        return [round(self.refreshes.get(layer, 0.0)) for layer in range(num_layers)]


def parse(text: str) -> ElasticCounters:
    """The Elastic-Cache sums of one ``/metrics`` page."""
    out = ElasticCounters()
    simple = {
        "vllm_elastic:requests_total": "requests",
        "vllm_elastic:request_nfe_sum": "nfe_sum",
        "vllm_elastic:request_nfe_count": "nfe_count",
        "vllm_elastic:request_layer_row_fraction_sum": "fraction_sum",
        "vllm_elastic:request_layer_row_fraction_count": "fraction_count",
    }
    for name, labels, value in _SAMPLE.findall(text):
        out.found = True
        if name in simple:
            setattr(out, simple[name], getattr(out, simple[name]) + float(value))
        elif name == "vllm_elastic:layer_refreshes_total":
            layer = _LAYER.search(labels or "")
            if layer:
                key = int(layer.group(1))
                out.refreshes[key] = out.refreshes.get(key, 0.0) + float(value)
    return out


def scrape(root_url: str) -> ElasticCounters:
    """Read ``root_url/metrics`` (the server drains its workers' counts on each read)."""
    with urllib.request.urlopen(root_url + "/metrics", timeout=SCRAPE_TIMEOUT_S) as r:
        return parse(r.read().decode())
