"""Does the test-bed model learn to copy from the prompt on the real ``recite`` data?

  python benchmarks/recite_copy.py                       # recite problems, as the test bed draws
  python benchmarks/recite_copy.py --copy-loss-only      # the loss on the copied tokens alone
  python benchmarks/recite_copy.py --fill-copied         # only they masked, the rest given
  python benchmarks/recite_copy.py --steps-only --chat 0 # the prompt is the step lines alone
  python benchmarks/recite_copy.py --no-space            # without the space token before numbers
  python benchmarks/recite_copy.py --echo 0.5            # half the sequences copy random tokens
  python benchmarks/recite_copy.py --equal-lines         # every step sentence the same length
  python benchmarks/recite_copy.py --copy-loss-only --pad 8   # EOS to 8 past the longest answer
  python benchmarks/recite_copy.py --dense 1 --pad 8      # lines whose every slot is a copy
  python benchmarks/recite_copy.py --dense 1 --pad 8 --dense-lines 8   # ... always 8 of them
  python benchmarks/recite_copy.py --init runs/train/model --dense 1 --pad 8 --dense-lines 2 9

``masking_copy.py``'s loop (batches of 16, each answer position masked with probability t ~ U(0, 1),
the plain mean loss, AdamW at a fixed rate, no schedule) on ``recite`` problems for canvas 256
written with the test-bed tokenizer, half of them through the chat template, answers padded with
EOS to the canvas: the test-bed model from scratch on the test bed's own tokens, without the rest
of its pipeline (curriculum, block batches, clean prefixes, other families). Every 50 updates it
scores 32 fresh problems: one copied token (a step sentence's number or name, which only the prompt
holds) masked alone, everything else visible, right or not.

``--echo SHARE``: that share of the sequences is a copy drill with no words around it: a prompt of
20 to 80 tokens drawn at random from those that ``recite`` answers use, the answer the same tokens.
Every answer token is then a copy, where in ``recite`` one in six to eleven is.

``--dense SHARE``: that share of the sequences is a copy drill whose lines have ``story``'s
sentence forms with every slot (subject, operand of 1 to 99, item, other person) drawn anew for
each line (``dense_problem``): most of each line is a copy only the prompt's line can give, as in
``masking_copy.py --sentences``. The loss takes all of such a sequence's masked tokens (with
``--copy-loss-only`` too); the score is printed for these sequences as well. ``--dense-lines``:
their number of lines, fixed (``8``) or drawn from a range (``6 10``); by default as ``story``
draws its steps (2 to 9). Each report also gives the loss of the batch's masked copied tokens.

``--equal-lines``: ``story``'s sentences rewritten so that every step line has the same number of
tokens (``EQUAL_ADD`` / ``EQUAL_SUB``: a word added or moved; operands are one digit, names and
items one token): ``masking_copy.py`` learns its copy in 100 updates when its lines have one
length and slowly when they differ.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from vllm_elastic.core.model import LLaDAModel
from vllm_elastic.eval.runner import load
from vllm_elastic.tasks import recite, story
from vllm_elastic.tasks.prompting import encode_prompt
from vllm_elastic.train.bpe import build_tokenizer
from vllm_elastic.train.testbed import model_config

CANVAS = 256
SCORED = 32  # problems per score
NAMES = {f" {name}" for name, _, _ in story.NAMES}
# --equal-lines: "Step k: " and these are 11 tokens each with the test-bed tokenizer
EQUAL_ADD = ["{p} buys {b} more {i}.", "{p} finds {b} more {i}.", "{o} gives {q} {b} {i}."]
EQUAL_SUB = ["{p} gives {o} {b} {i}.", "{p} loses {b} more {i}.", "{p} sells {b} more {i}."]


def dense_problem(rng: random.Random, lines: tuple[int, ...] = (), templates: int = 0) -> dict:
    """``--dense``: ``recite`` lines whose every slot (subject, operand of 1 to 99, item, other
    person) is drawn anew for each line, so that nearly every token but the line's number is a
    copy that only the prompt's line can give; the prompt is the lines alone. ``lines``: that
    many lines, or from LO to HI (empty: as ``story`` draws them); ``templates``: the first that
    many sentence forms (0: all)."""
    out, forms = [], story.ADD_VERBS + story.SUB_VERBS
    lo, hi = (lines * 2)[:2] if lines else story.STEPS[CANVAS]
    for k in range(1, rng.randint(lo, hi) + 1):
        (name, _, obj), (other, _, _) = rng.sample(story.NAMES, 2)
        verb = rng.choice(forms[: templates or len(forms)])
        sentence = verb.format(p=name, q=obj, o=other, b=rng.randint(1, 99),
                               i=rng.choice(story.ITEMS))  # fmt: skip
        out.append(f"Step {k}: {sentence}")
    text = "\n".join(out)
    return {"prompt": text, "response": text}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokenizer", default=None,
                   help="a saved tokenizer (default: the test bed's, built as train.testbed does)")
    p.add_argument("--steps", type=int, default=301)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: none)")
    p.add_argument("--chat", type=float, default=0.5, help="share of prompts in the chat template")
    p.add_argument("--pad", type=int, default=-1,
                   help="EOS tokens after the batch's longest answer (-1: to the canvas)")
    p.add_argument("--copy-loss-only", action="store_true",
                   help="the loss on the masked copied tokens alone (numbers and names)")
    p.add_argument("--fill-copied", action="store_true",
                   help="only the copied tokens maskable, the rest of the answer given (a drill)")
    p.add_argument("--steps-only", action="store_true", help="the prompt is the step lines alone")
    p.add_argument("--no-space", action="store_true",
                   help="drop the space token (before every number) from prompt and answer")
    p.add_argument("--echo", type=float, default=0.0, help="share of random-token copy drills")
    p.add_argument("--dense", type=float, default=0.0,
                   help="share of dense copy drills: every slot of every step line drawn anew")
    p.add_argument("--dense-lines", type=int, nargs="+", default=[], metavar="N",
                   help="--dense: lines per problem (N, or LO HI)")
    p.add_argument("--dense-templates", type=int, default=0,
                   help="--dense: the first N sentence forms only")
    p.add_argument("--left-pad", action="store_true",
                   help="EOS before shorter prompts: every answer starts at one position")
    p.add_argument("--equal-lines", action="store_true",
                   help="step sentences of one length (EQUAL_ADD, EQUAL_SUB)")
    p.add_argument("--seed", type=int, default=0, help="weights (seed) and data (seed + 1)")
    p.add_argument("--init", default=None,
                   help="start from this HF model directory (its weights and tokenizer)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.init and args.tokenizer:
        p.error("--init brings its model's own tokenizer: drop --tokenizer")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.equal_lines:  # this process's story generator only
        story.ADD_VERBS[:], story.SUB_VERBS[:] = EQUAL_ADD, EQUAL_SUB
    if args.init:  # a trained model goes on learning (its own tokenizer)
        model, tok = load(args.init)
        model.train()
    else:
        tok = (AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer
               else build_tokenizer(0))  # fmt: skip
        shape = argparse.Namespace(d_model=256, n_heads=4, n_layers=6, mlp=768)  # the test bed's
        model = LLaDAModel(model_config(tok, shape))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    rng = random.Random(args.seed + 1)
    space = tok(" ", add_special_tokens=False)["input_ids"][0]

    colon = tok(":", add_special_tokens=False)["input_ids"][0]
    digits = {tok(str(d), add_special_tokens=False)["input_ids"][0] for d in range(10)}
    names = {tok(name, add_special_tokens=False)["input_ids"][0] for name in NAMES}

    def copied(ids: torch.Tensor) -> torch.Tensor:
        """[n, T] the numbers and names of step sentences: digits not followed by ':' (a line's
        own number, which the line above gives away) and names."""
        nxt = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1)  # [n, T]
        digit = torch.isin(ids, torch.tensor(sorted(digits))) & (nxt != colon)
        return digit | torch.isin(ids, torch.tensor(sorted(names)))

    pool = []  # the echo drill's tokens (drawn only with --echo: the other runs' streams kept)
    if args.echo > 0:
        pool = sorted({t for _ in range(200) for t in tok(
            recite.make_problem(rng, CANVAS)["response"], add_special_tokens=False
        )["input_ids"]})  # fmt: skip

    def batch(
        n: int, echo: float, dense: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]], torch.Tensor]:
        """ids [n, T] (prompt, answer, EOS), maskable [n, T], each row's (answer start, length),
        and which rows are dense drills [n]."""
        rows, is_dense = [], []
        for _ in range(n):
            if args.echo > 0 and rng.random() < echo:  # (no draw without --echo)
                seq = [rng.choice(pool) for _ in range(rng.randint(20, 80))]
                rows.append((seq, list(seq)))
                is_dense.append(False)
                continue
            is_dense.append(dense > 0 and rng.random() < dense)  # (no draw without --dense)
            problem = (
                dense_problem(rng, tuple(args.dense_lines), args.dense_templates)
                if is_dense[-1] else recite.make_problem(rng, CANVAS)
            )
            text = problem["response"] if args.steps_only else problem["prompt"]
            prompt = encode_prompt(tok, text, chat=rng.random() < args.chat)
            answer = tok(problem["response"], add_special_tokens=False)["input_ids"]
            if args.no_space:
                prompt = [t for t in prompt if t != space]
                answer = [t for t in answer if t != space]
            rows.append((prompt, answer))
        width = max(len(pr) for pr, _ in rows)
        canvas = CANVAS if args.pad < 0 else max(len(a) for _, a in rows) + args.pad
        ids = torch.full((n, width + canvas), tok.eos_token_id)  # [n, T]
        maskable = torch.zeros_like(ids, dtype=torch.bool)  # [n, T]
        spans = []
        for i, (pr, a) in enumerate(rows):
            lo = width - len(pr) if args.left_pad else 0  # where the prompt starts
            ids[i, lo : lo + len(pr)] = torch.tensor(pr)
            ids[i, lo + len(pr) : lo + len(pr) + len(a)] = torch.tensor(a)
            maskable[i, lo + len(pr) :] = True
            spans.append((lo + len(pr), len(a)))
        return ids, maskable, spans, torch.tensor(is_dense)

    @torch.no_grad()
    def score(dense: float = 0.0) -> float:
        ids, _, spans, _ = batch(SCORED, 0.0, dense)
        ok = copied(ids)  # [n, T]
        picks = [rng.choice([s + j for j in range(n) if ok[i, s + j]])
                 for i, (s, n) in enumerate(spans)]  # fmt: skip
        noisy = ids.clone()
        noisy[range(SCORED), picks] = tok.mask_token_id
        guess = model(noisy).argmax(-1)[range(SCORED), picks]
        return float((guess == ids[range(SCORED), picks]).float().mean())

    start = time.time()
    for step in range(args.steps):
        ids, maskable, _, dense_rows = batch(args.batch, args.echo, args.dense)
        t = torch.rand(args.batch, 1)  # [n, 1]
        if args.fill_copied:
            maskable = maskable & copied(ids)
        masked = (torch.rand(ids.shape) < t) & maskable  # [n, T]
        logits = model(torch.where(masked, tok.mask_token_id, ids))  # [n, T, V]
        target = masked
        if args.copy_loss_only:
            target = masked & (copied(ids) | dense_rows[:, None])
        loss = F.cross_entropy(logits[target], ids[target])
        opt.zero_grad()
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if step % 50 == 0:
            on_copies = masked & copied(ids)
            copy_loss = F.cross_entropy(logits[on_copies].detach(), ids[on_copies])
            model.eval()
            right = score()
            dense = f"  dense drill's {score(1.0):.3f}" if args.dense > 0 else ""
            model.train()
            print(f"update {step:4d}  {time.time() - start:5.0f} s  loss {loss.item():.3f}  "
                  f"copies' loss {copy_loss.item():.3f}  "
                  f"copied tokens alone right {right:.3f}{dense}", flush=True)


if __name__ == "__main__":
    main()
