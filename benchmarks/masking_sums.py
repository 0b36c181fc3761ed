"""Can the test-bed architecture learn one-digit sums under the masked-diffusion objective?

  python benchmarks/masking_sums.py --sums 1 --mask results --batch 128   # one sum a sequence
  python benchmarks/masking_sums.py --sums 20 --mask all      # LLaDA's objective: anything masked
  python benchmarks/masking_sums.py --sums 20 --mask results  # only the results maskable
  python benchmarks/masking_sums.py --sums 20 --mask results --two-digit --steps 1500
  python benchmarks/masking_sums.py --sums 20 --mask results --two-digit --loss llada

Sequences: ``a + b`` lines as a prompt, then the same lines as the answer with ``= c``, c = (a + b)
mod 10, single digits. ``--two-digit``: ``story``'s working step instead, ``a +/- b = c`` with a
and c in 0..99 written as two digit tokens (zero-padded) and b in 1..9, so that a carry or a borrow
crosses from the ones digit to the tens digit in about half of the lines. The model
(``core/model.py``, 6 layers, d_model 256, as the test-bed model) is trained from scratch on
masked positions of the answer (each maskable position masked with probability t ~ U(0, 1) per
sequence), and every 50 updates scored on fresh sequences with all the
results masked and everything else visible. The gap between ``all`` and ``results`` is why the
``sums`` drill marks its results as the only positions training masks, and the gap between
``--loss mean`` and ``--loss llada`` why the trainer's default loss is the plain mean
(docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel

PLUS, EQ, NEWLINE, MINUS, MASK, VOCAB = 10, 11, 12, 13, 15, 16  # digits are tokens 0..9
LINE = 6  # answer tokens per sum: a + b = c \n
RESULT = 4  # c's place in its answer line
LINE2 = 8  # --two-digit: a1 a2 op b = c1 c2 \n
RESULTS2 = (5, 6)  # c1, c2 in such a line


def sums(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt [n, 4k] and answer [n, 6k] token ids of k sums per sequence."""
    a = torch.randint(0, 10, (n, k), generator=gen)
    b = torch.randint(0, 10, (n, k), generator=gen)
    sep = torch.full_like(a, PLUS), torch.full_like(a, EQ), torch.full_like(a, NEWLINE)
    prompt = torch.stack([a, sep[0], b, sep[2]], -1).reshape(n, -1)
    answer = torch.stack([a, sep[0], b, sep[1], (a + b) % 10, sep[2]], -1).reshape(n, -1)
    return prompt, answer


def sums2(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt [n, 5k] and answer [n, 8k] of k two-digit working steps per sequence."""
    a = torch.randint(0, 100, (n, k), generator=gen)
    minus = torch.rand(n, k, generator=gen) < 0.5
    minus = torch.where(a < 10, False, torch.where(a > 90, True, minus))  # c stays in 0..99
    b = torch.randint(1, 10, (n, k), generator=gen)
    c = torch.where(minus, a - b, a + b)
    op = torch.where(minus, MINUS, PLUS)
    nl, eq = torch.full_like(a, NEWLINE), torch.full_like(a, EQ)
    prompt = torch.stack([a // 10, a % 10, op, b, nl], -1).reshape(n, -1)
    answer = torch.stack([a // 10, a % 10, op, b, eq, c // 10, c % 10, nl], -1).reshape(n, -1)
    return prompt, answer


def layout(two_digit: bool, k: int) -> tuple[callable, int, torch.Tensor]:
    """(the generator, tokens per answer line, the result columns of a k-line answer)."""
    if two_digit:
        return sums2, LINE2, torch.tensor([i * LINE2 + r for i in range(k) for r in RESULTS2])
    return sums, LINE, torch.arange(k) * LINE + RESULT


@torch.no_grad()
def score(model: LLaDAModel, k: int, gen: torch.Generator, two_digit: bool = False) -> float:
    """Share of results (every digit of one) right with all results masked at once."""
    make, _, cols = layout(two_digit, k)
    prompt, answer = make(64, k, gen)
    noisy = answer.clone()
    noisy[:, cols] = MASK
    logits = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :]  # [n, answer, V]
    right = logits[:, cols].argmax(-1) == answer[:, cols]  # [n, digits]
    return right.view(64, k, -1).all(-1).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sums", type=int, default=20, help="sums per sequence")
    p.add_argument("--mask", choices=["all", "results"], default="all")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--two-digit", action="store_true", help="story's working step (see above)")
    p.add_argument("--loss", choices=["mean", "llada"], default="mean",
                   help="mean: the masked positions' mean cross-entropy; llada: LLaDA's, each "
                        "weighted 1/t and summed, over the maskable positions (train/objective.py)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6, mlp_hidden_size=768,
                      vocab_size=VOCAB, embedding_size=VOCAB, max_sequence_length=16 * args.sums,
                      mask_token_id=MASK, rope_theta=10000.0)  # fmt: skip
    model = LLaDAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    gen, start = torch.Generator().manual_seed(1), time.time()
    make, line, cols = layout(args.two_digit, args.sums)
    maskable = torch.ones(line * args.sums, dtype=torch.bool)  # [answer]
    if args.mask == "results":
        maskable[:] = False
        maskable[cols] = True
    for step in range(args.steps):
        prompt, answer = make(args.batch, args.sums, gen)
        t = torch.rand(args.batch, 1, generator=gen)  # [n, 1]
        masked = (torch.rand(answer.shape, generator=gen) < t) & maskable  # [n, 6k]
        noisy = torch.cat([prompt, torch.where(masked, MASK, answer)], 1)
        logits = model(noisy)[:, prompt.shape[1] :]  # [n, 6k, V]
        if args.loss == "mean":
            loss = F.cross_entropy(logits[masked], answer[masked])
        else:
            ce = F.cross_entropy(logits[masked], answer[masked], reduction="none")  # [M]
            weight = (1.0 / t).expand_as(masked)[masked] / maskable.sum()  # [M]
            loss = (ce * weight).sum() / args.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"update {step:4d}  {time.time() - start:6.0f} s  loss {loss.item():.3f}  "
                  f"results right {score(model, args.sums, gen, args.two_digit):.3f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
