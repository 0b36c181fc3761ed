"""Bar chart of Elastic-Cache refreshes per layer over a bench run (PNG), from bench JSON files.

  python benchmarks/plot_refreshes.py runs/server/server-arith-256.json \
      runs/server/server-arith-256-g099.json --out docs/refreshes_per_layer.png

One group of bars per layer, one bar per series. A series is one method (for ``elastic``, with its
drift threshold γ, ``settings.gamma``), summed over all rows (concurrencies) of the files. A refresh
of layer l is a forward after a request's first in which layer l recomputed every row
(``core/accounting.py``), so a refresh from layer l* + 1 counts at every layer from l* + 1 to the
last: ``llada`` recomputes every layer in every step, ``fastdllm`` at each new block, ``elastic``
from the layer after the one whose drift test fired.
The bar is refreshes per request (the sum over requests / requests; the label gives the sum), on a
symmetric-log axis so that ``llada``'s tens per request and ``elastic``'s few fit together. Works
for every engine's JSON (``refreshes_per_layer`` per row); for ``--engine server`` the counts are
the differences of the server's ``/metrics`` counters over each row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BAR_GROUP_WIDTH = 0.8
FIGSIZE = (8.0, 4.5)
LINEAR_BELOW = 0.01  # symlog: linear between 0 and this many refreshes per request
DPI = 120


def series(paths: list[str]) -> dict[str, dict]:
    """label -> {"refreshes": per-layer sums, "requests": requests covered}, in first-seen order."""
    out: dict[str, dict] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["runs"]:
            label = (
                f"{r['method']} (γ {r['settings']['gamma']:g})"
                if r["method"] == "elastic"
                else r["method"]
            )
            s = out.setdefault(
                label, {"refreshes": [0] * len(r["refreshes_per_layer"]), "requests": 0}
            )
            s["refreshes"] = [a + b for a, b in zip(s["refreshes"], r["refreshes_per_layer"])]
            s["requests"] += r.get("requests", r["num_prompts"])
    return out


def plot(data: dict[str, dict], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_layers = max(len(s["refreshes"]) for s in data.values())
    width = BAR_GROUP_WIDTH / max(1, len(data))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for k, (label, s) in enumerate(data.items()):
        xs = [layer + (k - (len(data) - 1) / 2) * width for layer in range(len(s["refreshes"]))]
        per_request = [n / max(1, s["requests"]) for n in s["refreshes"]]
        bars = ax.bar(xs, per_request, width, label=f"{label}: {s['requests']} requests")
        ax.bar_label(bars, labels=[str(n) for n in s["refreshes"]], fontsize=6)
    ax.set_xticks(range(num_layers))
    ax.set_xlabel("layer (0 = first); a refresh from layer l counts at l and every layer above")
    ax.set_yscale("symlog", linthresh=LINEAR_BELOW)
    ax.set_ylabel("full recomputes per request (labels: total)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(3, len(data)))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("json", nargs="+", help="bench JSON files (python -m vllm_elastic.bench --json)")
    p.add_argument("--out", default="docs/refreshes_per_layer.png")
    p.add_argument("--title", default="Elastic-Cache refreshes per layer over the load run")
    args = p.parse_args(argv)
    data = series(args.json)
    if not data:
        p.error("the JSON files hold no runs")
    plot(data, args.out, args.title)
    for label, s in data.items():
        print(f"{label}: {s['requests']} requests, refreshes per layer {s['refreshes']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
