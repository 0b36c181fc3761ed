"""The committed tokens' logprobs of one engine step, in the layout vLLM's output path reads.

The runner hands vLLM a [R, width] block of token ids per step, -1 where a request has fewer new
tokens than the widest one. vLLM's ``RejectionSampler.parse_output`` keeps the entries that are not
-1 and takes the logprob rows at the same flat index (row r * width + j for the j-th token of
request r); the scheduler then slices each request's rows, one per token it keeps. So row
``r * width + j`` here holds the record of request r's j-th new token: column 0 the token and its
logprob, columns 1..k its top-k alternatives, as vLLM's sampler lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from vllm.v1.outputs import LogprobsTensors

from ..core.logprobs import TokenLogprobs

# columns past a row's own alternatives: vLLM reads k + 1 columns of a request that asked for k, so
# only an EOS the runner added (no alternatives) shows it; finite, so that JSON can carry it
UNUSED_LOGPROB = -9999.0


def step_logprobs(
    rows: Sequence[Sequence[TokenLogprobs] | None], width: int
) -> LogprobsTensors | None:
    """rows[r]: request r's new tokens' records this step, or None when it asked for none."""
    asked = [r for r in rows if r is not None]
    if not asked:
        return None
    k = max((len(e.top_ids) for r in asked for e in r), default=0)
    n = len(rows) * width
    ids = torch.zeros(n, k + 1, dtype=torch.int32)  # [R * width, k + 1]
    logprobs = torch.full((n, k + 1), UNUSED_LOGPROB, dtype=torch.float32)  # [R * width, k + 1]
    ranks = torch.zeros(n, dtype=torch.int32)  # [R * width]
    for r, entries in enumerate(rows):
        for j, e in enumerate(entries or ()):
            i, top = r * width + j, len(e.top_ids)
            ids[i, 0], logprobs[i, 0], ranks[i] = e.token, e.logprob, e.rank
            ids[i, 1 : 1 + top] = torch.tensor(e.top_ids, dtype=torch.int32)
            logprobs[i, 1 : 1 + top] = torch.tensor(e.top_logprobs, dtype=torch.float32)
    return LogprobsTensors(ids, logprobs, ranks)
