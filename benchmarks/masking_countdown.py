"""Can the test-bed architecture learn `listing`'s count down, and does the digits' order matter?

  python benchmarks/masking_countdown.py --order high   # 334 as 3 3 4, as the tokenizer writes it
  python benchmarks/masking_countdown.py --order low    # 334 as 4 3 3: the ones digit first
  python benchmarks/masking_countdown.py --words        # each line also in words, as listing's
  python benchmarks/masking_countdown.py --both         # counting up or down, as the prompt says
  python benchmarks/masking_countdown.py --chain        # lines `334 - 3 = 331`, step and sign set

Sequences: a prompt of a three-digit start number and a separator, then an answer of --lines
lines counting down from it one at a time, each the number's three digit tokens and a newline
(``listing``'s numbers without their words; --words adds them: three word tokens after the
digits, high digit first as they are read; --both counts up or down, the prompt's last token
saying which, as listing's prompt does; --chain writes each line as a sum, `334 - 3 = 331`, with
the step 1..9 and its sign set by the prompt: the start number, the sign and the step). With
--order high a line's tens digit comes before the ones digit that decides whether it borrows;
with --order low after it. The model
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

NEWLINE, SEP, MASK, WORDS, UP = 10, 11, 12, 13, 23  # digits are tokens 0..9, words 13..22
MINUS, PLUS, EQUALS = 24, 25, 26
LOWEST = 100  # every number keeps three digits
SCORED = 32  # sequences per score


def digits(x: torch.Tensor, order: str) -> torch.Tensor:
    """[..., 3] digit tokens of the three-digit numbers x, high or low digit first."""
    d = torch.stack([x // 100, x // 10 % 10, x % 10], -1)
    return d if order == "high" else d.flip(-1)


def line_tokens(args: argparse.Namespace) -> int:
    return 10 if args.chain else 7 if args.words else 4  # d d d [w w w] \n; d d d +- k = d d d \n


def chain(n: int, lines: int, gen: torch.Generator):
    """prompt [n, 5] (start digits, sign, step) and answer [n, 10 * lines] token ids: each line
    the number above it, the sign, the step, and the result."""
    step = torch.randint(1, 10, (n, 1), generator=gen)  # [n, 1]
    up = torch.rand(n, 1, generator=gen) < 0.5  # [n, 1]
    span = step * lines  # [n, 1]
    start = torch.where(up, LOWEST + (torch.rand(n, 1, generator=gen) * (900 - span)).long(),
                        999 - (torch.rand(n, 1, generator=gen) * (900 - span)).long())  # fmt: skip
    numbers = start + torch.where(up, step, -step) * torch.arange(lines + 1)  # [n, lines + 1]
    sign = torch.where(up, PLUS, MINUS)[:, :, None].expand(n, lines, 1)  # [n, lines, 1]
    answer = torch.cat([digits(numbers[:, :-1], "high"), sign, step[:, :, None].expand(n, lines, 1),
                        torch.full((n, lines, 1), EQUALS), digits(numbers[:, 1:], "high"),
                        torch.full((n, lines, 1), NEWLINE)], -1).reshape(n, -1)  # fmt: skip
    prompt = torch.cat([digits(start, "high").reshape(n, -1), sign[:, 0], step], 1)  # [n, 5]
    return prompt, answer


def countdown(n: int, lines: int, order: str, gen: torch.Generator, words: bool = False,
              both: bool = False):
    """prompt [n, 4] and answer [n, line_tokens * lines] token ids; with ``both`` half the
    sequences count up, their prompt ending in UP instead of SEP."""
    top = 1000 - lines + 1 if both else 1000
    start = torch.randint(LOWEST + lines - 1, top, (n, 1), generator=gen)  # [n, 1]
    up = torch.rand(n, 1, generator=gen) < 0.5 if both else torch.zeros(n, 1, dtype=torch.bool)
    numbers = start + torch.where(up, 1, -1) * torch.arange(lines)  # [n, lines]
    parts = [digits(numbers, order)] + ([WORDS + digits(numbers, "high")] if words else [])
    parts.append(torch.full((n, lines, 1), NEWLINE))
    answer = torch.cat(parts, -1).reshape(n, -1)  # [n, line_tokens * lines]
    prompt = torch.cat([digits(start, order).reshape(n, -1), torch.where(up, UP, SEP)], 1)
    return prompt, answer


def draw(n: int, args: argparse.Namespace, gen: torch.Generator):
    """n sequences of the kind ``args`` asks for: prompt [n, P] and answer [n, A] token ids."""
    if args.chain:
        return chain(n, args.lines, gen)
    return countdown(n, args.lines, args.order, gen, args.words, args.both)


@torch.no_grad()
def score(model: LLaDAModel, args: argparse.Namespace, gen: torch.Generator) -> tuple[float, float]:
    """(lines right, answers right) decoding left to right, one greedy token a step."""
    prompt, answer = draw(SCORED, args, gen)
    canvas = torch.full_like(answer, MASK)
    for j in range(answer.shape[1]):
        logits = model(torch.cat([prompt, canvas], 1))[:, prompt.shape[1] + j]  # [n, V]
        canvas[:, j] = logits.argmax(-1)
    right = (canvas == answer).view(SCORED, args.lines, line_tokens(args)).all(-1)  # [n, lines]
    return right.float().mean().item(), right.all(-1).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--order", choices=["high", "low"], default="high")
    p.add_argument("--lines", type=int, default=12)
    p.add_argument("--words", action="store_true", help="each line also in digit words")
    p.add_argument("--both", action="store_true", help="count up or down, as the prompt says")
    p.add_argument("--chain", action="store_true", help="each line a sum: 334 - 3 = 331")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = EQUALS + 1 if args.chain else UP + 1 if args.both else WORDS + (10 if args.words else 0)
    cfg = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6, mlp_hidden_size=768,
                      vocab_size=vocab, embedding_size=vocab, mask_token_id=MASK,
                      max_sequence_length=10 * (args.lines + 1), rope_theta=10000.0)  # fmt: skip
    model = LLaDAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    gen, start = torch.Generator().manual_seed(1), time.time()
    for step in range(args.steps):
        prompt, answer = draw(args.batch, args, gen)
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
            lines, answers = score(model, args, gen)
            print(f"update {step:4d}  {time.time() - start:6.0f} s  loss {loss.item():.3f}  "
                  f"lines right {lines:.3f}  answers right {answers:.3f}", flush=True)


if __name__ == "__main__":
    main()
