"""Can the test-bed architecture learn to copy the prompt's lines under masked diffusion?

  python benchmarks/masking_copy.py                    # k = 8 lines of 4 random digits each
  python benchmarks/masking_copy.py --jitter 40     # the copy's distance changes: look it up
  python benchmarks/masking_copy.py --jitter 40 --digit-index   # ... by a number made of digits
  python benchmarks/masking_copy.py --jitter 40 --digit-index --pad 180   # EOS to a 256 canvas
  python benchmarks/masking_copy.py --ragged 8    # lines of 1 to 8 digits: where a line is varies
  python benchmarks/masking_copy.py --ragged 8 --token-index   # ... each number one token
  python benchmarks/masking_copy.py --ragged 3 --sentences   # lines as sentences: words repeat

Sequences: a prompt of k lines ``L i : d d d d`` (i the line's number, one token each; d random
digits), then the answer, the same lines in the same order: ``recite``'s copy (docs/TASKS.md) with
nothing else in it. The model (``core/model.py``, 6 layers, d_model 256, as the test-bed model) is
trained from scratch on the answer, each position masked with probability t ~ U(0, 1) per sequence
(the plain mean loss), and every 50 updates scored on fresh sequences two ways: ``line``, one
answer line and everything after it masked (what the sampler sees at that line: whole lines
right), and ``token``, one answer digit masked alone, everything else visible. The test-bed model
learns the second slowly on its real data (``story_tokens_alone``, docs/TRAINING.md); this says
whether the architecture and the objective learn the copy at all when it is all there is.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vllm_elastic.core.config import LLaDAConfig
from vllm_elastic.core.model import LLaDAModel

SEP, NEWLINE, MASK, MARK, FILLER, EOS, FIRST_INDEX = 10, 11, 12, 13, 14, 15, 16  # digits: 0..9
DIGITS = 4
MAX_LINES = 32
VERBS, ITEMS = 4, 8  # --sentences: word tokens after the line numbers
FIRST_VERB = FIRST_INDEX + MAX_LINES
FIRST_ITEM = FIRST_VERB + VERBS
FIRST_NAME = FIRST_ITEM + ITEMS
NAMES = 8  # --names changes it


def lines(n: int, k: int, gen: torch.Generator, digit_index: bool = False) -> torch.Tensor:
    """[n, k * line] token ids: k numbered lines of random digits per sequence. ``digit_index``:
    the number written as two digit tokens (``L 0 3 : ...``, as ``Step 3:`` is), so that finding
    the line means matching a pattern of tokens that also stand among the digits."""
    digits = torch.randint(0, 10, (n, k, DIGITS), generator=gen)
    number = torch.arange(k)[None, :, None].expand(n, k, 1)
    index = FIRST_INDEX + number
    if digit_index:
        index = torch.cat([(number + 1) // 10, (number + 1) % 10], -1)  # [n, k, 2]
    mark, sep = torch.full((n, k, 1), MARK), torch.full((n, k, 1), SEP)
    nl = torch.full((n, k, 1), NEWLINE)
    return torch.cat([mark, index, sep, digits, nl], -1).reshape(n, -1)


def ragged_lines(
    n: int, k: int, gen: torch.Generator, max_digits: int, digit_index: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
    """``--ragged``: lines of 1..max_digits digits, numbered with digit tokens (``digit_index``) or
    with one token per number. Returns the prompt
    [n, P] (left-padded with FILLER), the answer [n, A] (right-padded with EOS) and each
    sequence's line spans in the answer: a line's place in the prompt then depends on the
    lengths of the lines before it, as in the test bed."""
    rows, spans = [], []
    for _ in range(n):
        row, span = [], []
        for i in range(k):
            width = int(torch.randint(1, max_digits + 1, (1,), generator=gen))
            digits = torch.randint(0, 10, (width,), generator=gen).tolist()
            index = [(i + 1) // 10, (i + 1) % 10] if digit_index else [FIRST_INDEX + i]
            span.append((len(row), len(row) + 2 + len(index) + width + 1))
            row += [MARK, *index, SEP, *digits, NEWLINE]
        rows.append(row)
        spans.append(span)
    return _pad(rows, spans)


def sentence_lines(
    n: int, k: int, gen: torch.Generator, max_digits: int, names: int = NAMES
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]], list[list[int]]]:
    """``--sentences``: ``ragged_lines`` whose lines read like the test bed's steps, ``L 0 3 :
    verb d.. item : name``: the item is the same in every line of a sequence and the verb one
    of four, so a digit's or a name's neighbours no longer say which line it belongs to, only
    the line's number does (as ``He gives 9 cookies to Paul`` among lines that all say
    ``cookies``). Also returns each sequence's positions that only the copy can fill (its digits
    and names)."""
    rows, spans, copied = [], [], []
    for _ in range(n):
        row, span, own = [], [], []
        item = FIRST_ITEM + int(torch.randint(0, ITEMS, (1,), generator=gen))
        for i in range(k):
            width = int(torch.randint(1, max_digits + 1, (1,), generator=gen))
            digits = torch.randint(0, 10, (width,), generator=gen).tolist()
            verb = FIRST_VERB + int(torch.randint(0, VERBS, (1,), generator=gen))
            name = FIRST_NAME + int(torch.randint(0, names, (1,), generator=gen))
            line = [MARK, (i + 1) // 10, (i + 1) % 10, SEP, verb, *digits, item, SEP, name]
            own += [len(row) + 5 + j for j in range(width)] + [len(row) + len(line) - 1]
            span.append((len(row), len(row) + len(line) + 1))
            row += [*line, NEWLINE]
        rows.append(row)
        spans.append(span)
        copied.append(own)
    return (*_pad(rows, spans), copied)


def _pad(rows: list[list[int]], spans: list) -> tuple[torch.Tensor, torch.Tensor, list]:
    width = max(map(len, rows))
    prompt = torch.tensor([[FILLER] * (width - len(r)) + r for r in rows])
    answer = torch.tensor([r + [EOS] * (width - len(r)) for r in rows])
    return prompt, answer, spans


@torch.no_grad()
def score_ragged(
    model: LLaDAModel, k: int, max_digits: int, digit_index: bool, gen: torch.Generator
) -> tuple[float, float]:
    """``score`` for ``--ragged`` lines."""
    n = 64
    prompt, answer, spans = ragged_lines(n, k, gen, max_digits, digit_index)
    lines_right = tokens_right = 0
    for masked_tail in (True, False):
        noisy = answer.clone()
        picks = []
        for i in range(n):
            lo, hi = spans[i][int(torch.randint(0, k, (1,), generator=gen))]
            first_digit = lo + (4 if digit_index else 3)
            digit = int(torch.randint(first_digit, hi - 1, (1,), generator=gen))
            picks.append((lo, hi, digit))
            if masked_tail:
                noisy[i, lo:] = MASK
            else:
                noisy[i, digit] = MASK
        guess = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :].argmax(-1)
        for i, (lo, hi, digit) in enumerate(picks):
            if masked_tail:
                lines_right += bool((guess[i, lo:hi] == answer[i, lo:hi]).all())
            else:
                tokens_right += bool(guess[i, digit] == answer[i, digit])
    return lines_right / n, tokens_right / n


@torch.no_grad()
def score_sentences(
    model: LLaDAModel, k: int, max_digits: int, names: int, gen: torch.Generator
) -> tuple[float, float]:
    """``score`` for ``--sentences``: whole lines, and a copied token (digit or name) alone."""
    n = 64
    prompt, answer, spans, copied = sentence_lines(n, k, gen, max_digits, names)
    which = [spans[i][int(torch.randint(0, k, (1,), generator=gen))] for i in range(n)]
    noisy = answer.clone()
    for i, (lo, _) in enumerate(which):
        noisy[i, lo:] = MASK
    guess = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :].argmax(-1)
    lines_right = sum(bool((guess[i, lo:hi] == answer[i, lo:hi]).all()) for i, (lo, hi) in
                      enumerate(which))  # fmt: skip
    picks = torch.tensor([own[int(torch.randint(0, len(own), (1,), generator=gen))]
                          for own in copied])  # fmt: skip
    noisy = answer.clone()
    noisy[torch.arange(n), picks] = MASK
    guess = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :].argmax(-1)
    tokens_right = (guess[torch.arange(n), picks] == answer[torch.arange(n), picks]).float().mean()
    return lines_right / n, tokens_right.item()


def with_prefix(answer: torch.Tensor, jitter: int, gen: torch.Generator) -> torch.Tensor:
    """The prompt: 0..jitter filler tokens (the same count for the batch), then the lines, so that
    the distance from a prompt line to its copy changes from batch to batch (in the test bed it
    changes with the prompt's first line and the chat template): no fixed offset gives the copy
    away, only the line's number does."""
    pad = int(torch.randint(0, jitter + 1, (1,), generator=gen))
    return torch.cat([torch.full((answer.shape[0], pad), FILLER), answer], 1)


@torch.no_grad()
def score(
    model: LLaDAModel, k: int, jitter: int, digit_index: bool, pad: int, gen: torch.Generator
) -> tuple[float, float]:
    """(whole lines right with the line and all after it masked, digits right masked alone)."""
    n = 64
    answer = lines(n, k, gen, digit_index)
    prompt = with_prefix(answer, jitter, gen)
    line = answer.shape[1] // k
    answer = torch.cat([answer, torch.full((n, pad), EOS)], 1)
    which = torch.randint(0, k, (n,), generator=gen)  # the masked line of each sequence
    cols = torch.arange(answer.shape[1])[None]  # [1, A]
    noisy = torch.where(cols >= (which * line)[:, None], MASK, answer)
    guess = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :].argmax(-1)  # [n, A]
    in_line = (cols >= (which * line)[:, None]) & (cols < ((which + 1) * line)[:, None])
    line_right = ((guess == answer) | ~in_line).all(1).float().mean().item()
    digit = (which + 1) * line - 1 - DIGITS + torch.randint(0, DIGITS, (n,), generator=gen)
    noisy = answer.clone()
    noisy[torch.arange(n), digit] = MASK
    guess = model(torch.cat([prompt, noisy], 1))[:, prompt.shape[1] :].argmax(-1)
    token_right = (guess[torch.arange(n), digit] == answer[torch.arange(n), digit]).float().mean()
    return line_right, token_right.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lines", type=int, default=8, help="lines per prompt (and answer)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--digit-index", action="store_true",
                   help="number the lines with digit tokens (see lines)")
    p.add_argument("--ragged", type=int, default=0, metavar="MAX_DIGITS",
                   help="lines of 1..MAX_DIGITS digits, numbered with digits (ragged_lines)")
    p.add_argument("--token-index", action="store_true",
                   help="--ragged: one token per line number (as if 'Step 3:' were one token)")
    p.add_argument("--sentences", action="store_true",
                   help="--ragged: lines of words as well as digits (sentence_lines)")
    p.add_argument("--names", type=int, default=NAMES, help="--sentences: names to draw from")
    p.add_argument("--vocab", type=int, default=0,
                   help="embedding rows (at least the tokens used; the test bed has 640)")
    p.add_argument("--pad", type=int, default=0,
                   help="EOS tokens after the answer, maskable like it (LLaDA SFT's padding)")
    p.add_argument("--jitter", type=int, default=0,
                   help="up to this many filler tokens before the prompt's lines (see with_prefix)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not 1 <= args.lines <= MAX_LINES:
        p.error(f"--lines must be in 1..{MAX_LINES}")
    if args.sentences and not args.ragged:
        p.error("--sentences needs --ragged MAX_DIGITS (the numbers' lengths)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = FIRST_NAME + args.names if args.sentences else FIRST_INDEX + MAX_LINES
    vocab = max(vocab, args.vocab)  # (the earlier runs' initialisation kept without --vocab)
    cfg = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6,
                      mlp_hidden_size=768, vocab_size=vocab, embedding_size=vocab,
                      max_sequence_length=40 * MAX_LINES, mask_token_id=MASK,
                      rope_theta=10000.0)  # fmt: skip
    model = LLaDAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    gen, start = torch.Generator().manual_seed(1), time.time()
    for step in range(args.steps):
        if args.sentences:
            prompt, answer, *_ = sentence_lines(
                args.batch, args.lines, gen, args.ragged, args.names
            )
        elif args.ragged:
            prompt, answer, _ = ragged_lines(
                args.batch, args.lines, gen, args.ragged, not args.token_index
            )
        else:
            answer = lines(args.batch, args.lines, gen, args.digit_index)
            prompt = with_prefix(answer, args.jitter, gen)
        answer = torch.cat([answer, torch.full((args.batch, args.pad), EOS)], 1)
        t = torch.rand(args.batch, 1, generator=gen)  # [n, 1]
        masked = torch.rand(answer.shape, generator=gen) < t  # [n, A]
        noisy = torch.cat([prompt, torch.where(masked, MASK, answer)], 1)
        logits = model(noisy)[:, prompt.shape[1] :]  # [n, A, V]
        loss = F.cross_entropy(logits[masked], answer[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            if args.sentences:
                line, token = score_sentences(model, args.lines, args.ragged, args.names, gen)
            elif args.ragged:
                line, token = score_ragged(
                    model, args.lines, args.ragged, not args.token_index, gen
                )
            else:
                line, token = score(model, args.lines, args.jitter, args.digit_index, args.pad, gen)
            print(f"update {step:4d}  {time.time() - start:6.0f} s  loss {loss.item():.3f}  "
                  f"lines right {line:.3f}  digits alone right {token:.3f}", flush=True)


if __name__ == "__main__":
    main()
