"""Can the test-bed architecture learn `listing`'s count down, and does the digits' order matter?

  python benchmarks/masking_countdown.py --order high   # 334 as 3 3 4, as the tokenizer writes it
  python benchmarks/masking_countdown.py --order low    # 334 as 4 3 3: the ones digit first
  python benchmarks/masking_countdown.py --words        # each line also in words, as listing's

Sequences: a prompt of a three-digit start number and a separator, then an answer of --lines
lines counting down from it one at a time, each the number's three digit tokens and a newline
(``listing``'s numbers without their words; --words adds them: three word tokens after the
digits, high digit first as they are read). With --order high a line's tens digit comes before
the ones digit that decides whether it borrows; with --order low after it. The model
(``core/model.py``, 6 layers, d_model 256, as the test-bed model) is trained from scratch with
LLaDA's objective on the answer (each position masked with probability t ~ U(0, 1) per sequence,
the masked positions' mean cross-entropy), and every 200 updates scored on 32 fresh sequences
decoded one token a step left to right from a fully masked answer (greedy): the share of lines
right and of whole answers right.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel

NEWLINE, SEP, MASK, WORDS = 10, 11, 12, 13  # digits are tokens 0..9, digit words 13..22
LOWEST = 100  # every number keeps three digits
SCORED = 32  # sequences per score


def digits(x: torch.Tensor, order: str) -> torch.Tensor:
    """[..., 3] digit tokens of the three-digit numbers x, high or low digit first."""
    d = torch.stack([x // 100, x // 10 % 10, x % 10], -1)
    return d if order == "high" else d.flip(-1)


def line_tokens(words: bool) -> int:
    return 7 if words else 4  # d d d [w w w] \n


def countdown(n: int, lines: int, order: str, gen: torch.Generator, words: bool = False):
    """prompt [n, 4] and answer [n, line_tokens * lines] token ids."""
    start = torch.randint(LOWEST + lines - 1, 1000, (n, 1), generator=gen)  # [n, 1]
    numbers = start - torch.arange(lines)  # [n, lines]
    parts = [digits(numbers, order)] + ([WORDS + digits(numbers, "high")] if words else [])
    parts.append(torch.full((n, lines, 1), NEWLINE))
    answer = torch.cat(parts, -1).reshape(n, -1)  # [n, line_tokens * lines]
    prompt = torch.cat([digits(start, order).reshape(n, -1), torch.full((n, 1), SEP)], 1)
    return prompt, answer


@torch.no_grad()
def score(model: LLaDAModel, lines: int, order: str, gen: torch.Generator,
          words: bool = False) -> tuple[float, float]:
    """(lines right, answers right) decoding left to right, one greedy token a step."""
    prompt, answer = countdown(SCORED, lines, order, gen, words)
    canvas = torch.full_like(answer, MASK)
    for j in range(answer.shape[1]):
        logits = model(torch.cat([prompt, canvas], 1))[:, prompt.shape[1] + j]  # [n, V]
        canvas[:, j] = logits.argmax(-1)
    right = (canvas == answer).view(SCORED, lines, line_tokens(words)).all(-1)  # [n, lines]
    return right.float().mean().item(), right.all(-1).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--order", choices=["high", "low"], default="high")
    p.add_argument("--lines", type=int, default=12)
    p.add_argument("--words", action="store_true", help="each line also in digit words")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = WORDS + (10 if args.words else 0)
    cfg = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6, mlp_hidden_size=768,
                      vocab_size=vocab, embedding_size=vocab, mask_token_id=MASK,
                      max_sequence_length=8 * (args.lines + 1), rope_theta=10000.0)  # fmt: skip
    model = LLaDAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    gen, start = torch.Generator().manual_seed(1), time.time()
    for step in range(args.steps):
        prompt, answer = countdown(args.batch, args.lines, args.order, gen, args.words)
        t = torch.rand(args.batch, 1, generator=gen)  # [n, 1]
        masked = torch.rand(answer.shape, generator=gen) < t  # [n, answer]
        masked[:, 0] |= ~masked.any(1)  # at least one position a sequence
        noisy = torch.cat([prompt, torch.where(masked, MASK, answer)], 1)
        logits = model(noisy)[:, prompt.shape[1] :]  # [n, answer, V]
        loss = F.cross_entropy(logits[masked], answer[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == args.steps - 1:
            lines, answers = score(model, args.lines, args.order, gen, args.words)
            print(f"update {step:4d}  {time.time() - start:6.0f} s  loss {loss.item():.3f}  "
                  f"lines right {lines:.3f}  answers right {answers:.3f}", flush=True)


if __name__ == "__main__":
    main()
