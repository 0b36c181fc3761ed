"""Can the test-bed architecture learn one-digit sums under the masked-diffusion objective?

  python benchmarks/masking_sums.py --sums 1 --mask results --batch 128   # one sum a sequence
  python benchmarks/masking_sums.py --sums 20 --mask all      # LLaDA's objective: anything masked
  python benchmarks/masking_sums.py --sums 20 --mask results  # only the results maskable

Sequences: ``a + b`` lines as a prompt, then the same lines as the answer with ``= c``, c = (a + b)
mod 10, single digits. The model (``core/model.py``, 6 layers, d_model 256, as the test-bed model)
is trained from scratch on masked positions of the answer (each maskable position masked with
probability t ~ U(0, 1) per sequence), and every 50 updates scored on fresh sequences with all the
results masked and everything else visible. The gap between ``all`` and ``results`` is why the
``sums`` drill marks its results as the only positions training masks (docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel

PLUS, EQ, NEWLINE, MASK, VOCAB = 10, 11, 12, 15, 16  # digits are tokens 0..9
LINE = 6  # answer tokens per sum: a + b = c \n
RESULT = 4  # c's place in its answer line


def sums(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt [n, 4k] and answer [n, 6k] token ids of k sums per sequence."""
    a = torch.randint(0, 10, (n, k), generator=gen)
    b = torch.randint(0, 10, (n, k), generator=gen)
    sep = torch.full_like(a, PLUS), torch.full_like(a, EQ), torch.full_like(a, NEWLINE)
    prompt = torch.stack([a, sep[0], b, sep[2]], -1).reshape(n, -1)
    answer = torch.stack([a, sep[0], b, sep[1], (a + b) % 10, sep[2]], -1).reshape(n, -1)
    return prompt, answer


@torch.no_grad()
def score(model: LLaDAModel, k: int, gen: torch.Generator) -> float:
    prompt, answer = sums(64, k, gen)
    cols = torch.arange(k) * LINE + RESULT  # [k]
    noisy = answer.clone()
    noisy[:, cols] = MASK
    logits = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :]  # [n, 6k, V]
    return (logits[:, cols].argmax(-1) == answer[:, cols]).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sums", type=int, default=20, help="sums per sequence")
    p.add_argument("--mask", choices=["all", "results"], default="all")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6, mlp_hidden_size=768,
                      vocab_size=VOCAB, embedding_size=VOCAB, max_sequence_length=16 * args.sums,
                      mask_token_id=MASK, rope_theta=10000.0)  # fmt: skip
    model = LLaDAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    gen, start = torch.Generator().manual_seed(1), time.time()
    maskable = torch.ones(LINE * args.sums, dtype=torch.bool)  # [6k]
    if args.mask == "results":
        maskable[:] = False
        maskable[RESULT::LINE] = True
    for step in range(args.steps):
        prompt, answer = sums(args.batch, args.sums, gen)
        t = torch.rand(args.batch, 1, generator=gen)  # [n, 1]
        masked = (torch.rand(answer.shape, generator=gen) < t) & maskable  # [n, 6k]
        noisy = torch.cat([prompt, torch.where(masked, MASK, answer)], 1)
        logits = model(noisy)[:, prompt.shape[1] :]  # [n, 6k, V]
        loss = F.cross_entropy(logits[masked], answer[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"update {step:4d}  {time.time() - start:6.0f} s  loss {loss.item():.3f}  "
                  f"results right {score(model, args.sums, gen):.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
