"""Train the test-bed LLaDA on the story, program and listing families (LLaDA SFT), resumable.

  python -m vllm_elastic.train.testbed --out runs/train

Rerunning the same command continues from ``OUT/state.pt``: batches depend only on (seed, step), so
a resumed run matches an uninterrupted one. Progress goes to a tqdm bar and ``OUT/train_log.jsonl``.
``OUT/model`` is the latest weights in the HF layout (``eval`` and vLLM load it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.checkpoint import load_model
from ..core.config import LLaDAConfig
from ..core.model import LLaDAModel
from ..tasks import CANVASES, TRAINING_FAMILIES, load_jsonl
from .batches import FIRST_BLOCK_SHARES, make_batch
from .bpe import build_tokenizer
from .objective import LOSS_WEIGHTINGS, masked_diffusion_loss
from .resume import export, load_state, save_state

VOCAB_MULTIPLE = 64
# Arguments a resumed run must share with the run it continues (the model, data and lr schedule).
SCHEDULE_ARGS = ("seed", "steps", "batch_tokens", "lr", "warmup", "prefix_share", "block_share",
                 "block_length", "d_model", "n_layers", "n_heads", "mlp", "held_out",
                 "loss_weighting", "only", "first_block_share", "init",
                 "progress_from", "canvases", "last_block_share")  # fmt: skip
# What a checkpoint saved before an argument existed was trained with.
BEFORE_ARGS = {"loss_weighting": "llada", "only": [], "first_block_share": 0.0, "init": None,
               "progress_from": 0.0, "canvases": [], "last_block_share": 0.0}  # fmt: skip
EMA = 0.98


def model_config(tokenizer, args: argparse.Namespace) -> LLaDAConfig:
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return LLaDAConfig(
        d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_heads, n_layers=args.n_layers,
        mlp_hidden_size=args.mlp, vocab_size=vocab, embedding_size=vocab, rope_theta=10000.0,
        max_sequence_length=4096, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        extra={"bos_token_id": tokenizer.bos_token_id, "torch_dtype": "float32"},
    )  # fmt: skip


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def run_tokenizer(out: Path, seed: int, init: str | None = None):
    """The run's tokenizer: trained once (or the ``init`` model's own) and kept in
    ``OUT/tokenizer``, read back on resume."""
    from transformers import AutoTokenizer

    from ..plugin.hf_config import register_hf_config

    path = out / "tokenizer"
    if not path.exists():
        if init:
            register_hf_config()  # AutoTokenizer reads the init model's config.json
            source = AutoTokenizer.from_pretrained(init)
        else:
            source = build_tokenizer(seed)
        source.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def initial_model(tokenizer, args: argparse.Namespace) -> LLaDAModel:
    """A fresh model from the seed, or the ``--init`` model's weights (a further stage of
    training; its shape comes from its own config)."""
    if not args.init:
        return LLaDAModel(model_config(tokenizer, args))
    model = load_model(args.init)
    if model.config.vocab_size < len(tokenizer):
        raise ValueError(f"{args.init}'s vocabulary is smaller than its tokenizer's")
    return model


def run_progress(step: int, args: argparse.Namespace) -> float:
    """Where ``step`` is in the curricula: a run from ``--progress-from`` covers the rest of them
    (a further stage starts in their last phases)."""
    return args.progress_from + (1.0 - args.progress_from) * step / args.steps


def first_block_shares(args: argparse.Namespace) -> float | dict[str, float]:
    """``--first-block-share`` for every family, or the recipe's per family when it is not given."""
    return FIRST_BLOCK_SHARES if args.first_block_share is None else args.first_block_share


def held_out_prompts(pattern: str) -> set[str]:
    return {row["prompt"] for path in sorted(Path().glob(pattern)) for row in load_jsonl(path)}


def held_out_digest(prompts: set[str]) -> str:
    """A fingerprint of the prompts a run skips. A run reads them once, at its start: if the files
    change under it, the prompts added since may already have been trained on."""
    return hashlib.sha256("\n".join(sorted(prompts)).encode()).hexdigest()


def check_held_out(saved: str | None, now: str, pattern: str, out: Path) -> None:
    """Refuse to go on when the held-out files (digest ``now``) are not those the run has skipped
    so far (``saved``; None: a state saved before digests were)."""
    if saved is not None and saved != now:
        raise ValueError(
            f"the held-out files ({pattern}) changed since {out} started: it may have trained on "
            "prompts they now hold. Start a new run (another --out)."
        )


def _resume(
    out: Path, model: LLaDAModel, opt, args: argparse.Namespace, digest: str
) -> tuple[int, float, float]:
    """Load ``OUT/state.pt`` if there is one: (next step, loss EMA, wall seconds trained).
    ``digest``: the held-out files' digest at this start."""
    state = load_state(out)
    if state is None:
        return 0, None, 0.0
    check_held_out(state.get("held_out_digest"), digest, args.held_out, out)
    saved = {**BEFORE_ARGS, **state["args"]}
    changed = {k for k in SCHEDULE_ARGS if saved.get(k) != getattr(args, k)}
    if changed:
        raise ValueError(f"{out} was trained with other {sorted(changed)}: {state['args']}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    print(f"resuming {out} at step {state['step']} ({state['wall_s'] / 60:.1f} min trained)")
    return state["step"], state["loss_ema"], state["wall_s"]


def _update(model, opt, batch, step: int, args: argparse.Namespace, mask_id: int) -> float:
    """One optimizer step on ``batch`` at ``step``'s learning rate; returns the loss."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    block = None if batch.block_start is None else (batch.block_start, batch.block_end)
    loss = masked_diffusion_loss(
        model, batch.ids, batch.is_response, mask_id, gen, args.prefix_share, block,
        args.loss_weighting,
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def train(args: argparse.Namespace) -> None:
    """Run (or continue) training up to ``args.steps`` updates, saving as it goes."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = run_tokenizer(out, args.seed, args.init)
    model = initial_model(tokenizer, args).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    held_out = held_out_prompts(args.held_out)
    digest = held_out_digest(held_out)
    start_step, ema, wall = _resume(out, model, opt, args, digest)
    model.train()
    end = min(args.steps, args.stop_after or args.steps)
    bar = tqdm(range(start_step, end), initial=start_step, total=args.steps, desc="train")
    last_save, t0 = time.time(), time.time() - wall
    with open(out / "train_log.jsonl", "a") as log:
        for step in bar:
            progress = run_progress(step, args)
            batch = make_batch(args.seed, step, progress, tokenizer, args.batch_tokens, held_out,
                               args.block_share, args.block_length, tuple(args.only),
                               first_block_shares(args), tuple(args.canvases),
                               args.last_block_share)  # fmt: skip
            loss = _update(model, opt, batch, step, args, tokenizer.mask_token_id)
            ema = loss if ema is None else EMA * ema + (1 - EMA) * loss
            bar.set_postfix(loss=f"{ema:.3f}", canvas=batch.canvas)
            if step % args.log_every == 0:
                row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "loss": loss,
                       "loss_ema": ema, "lr": opt.param_groups[0]["lr"], "canvas": batch.canvas,
                       "tokens": batch.ids.numel(), "answer_tokens": batch.answer_tokens,
                       "drills": batch.drills}  # fmt: skip
                log.write(json.dumps(row) + "\n")
                log.flush()
            done = step + 1
            kept = args.keep_every and done % args.keep_every == 0
            if time.time() - last_save > args.save_minutes * 60 or done == end or kept:
                now = held_out_digest(held_out_prompts(args.held_out))  # changed under the run?
                check_held_out(digest, now, args.held_out, out)
                extra = {"loss_ema": ema, "wall_s": time.time() - t0, "args": vars(args),
                         "held_out_digest": digest}  # fmt: skip
                save_state(out, model, opt, done, extra)
                export(out, model, tokenizer, done, args.keep_every)
                last_save = time.time()
    print(f"{out}: {end} of {args.steps} steps, {(time.time() - t0) / 60:.1f} min, loss {ema:.4f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/train")
    p.add_argument(
        "--held-out", default="data/*.jsonl", help="glob of files whose prompts are skipped"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps", type=int, default=4500, help="total updates (the lr schedule's length)"
    )
    p.add_argument(
        "--batch-tokens", type=int, default=6144, help="tokens per batch (prompt + canvas)"
    )
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--prefix-share", type=float, default=0.5)
    p.add_argument(
        "--block-share", type=float, default=0.75,
        help="share of batches in the block sampler's state (objective.py)",
    )  # fmt: skip
    p.add_argument("--block-length", type=int, default=32, help="the sampler's block length")
    p.add_argument(
        "--first-block-share", type=float, default=None,
        help="share of a block batch's rows whose block starts at the answer's first token, for "
        f"every family (default: per family, {FIRST_BLOCK_SHARES}, the rest 0)",
    )  # fmt: skip
    p.add_argument(
        "--last-block-share", type=float, default=0.0,
        help="share of the other block rows whose block holds the answer's end (where the "
        "model decides the answer is over; batches.end_block_cut)",
    )  # fmt: skip
    p.add_argument(
        "--only", nargs="+", default=[], choices=sorted(TRAINING_FAMILIES), metavar="FAMILY",
        help="train on these families alone, equally (an experiment; default: the curriculum)",
    )  # fmt: skip
    p.add_argument(
        "--canvases", nargs="+", type=int, default=[], choices=CANVASES, metavar="CANVAS",
        help="train at these canvases alone, equally (an experiment; default: the curriculum)",
    )  # fmt: skip
    p.add_argument(
        "--loss-weighting", choices=sorted(LOSS_WEIGHTINGS), default="mean",
        help="llada: 1/t-weighted per sequence; mean: the masked positions' mean (objective.py)",
    )  # fmt: skip
    p.add_argument(
        "--init", default=None,
        help="start from this HF-layout model (and its tokenizer) instead of the seed's weights",
    )  # fmt: skip
    p.add_argument(
        "--progress-from", type=float, default=0.0,
        help="start the curricula at this progress in [0, 1) (a further stage; 0.31: the mixture)",
    )  # fmt: skip
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument(
        "--n-heads", type=int, default=4, help="head_dim 64: a size vLLM's CPU attention takes"
    )
    p.add_argument("--mlp", type=int, default=768)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device", default="cpu",
        help="where the model trains (cuda: a GPU); batches and masks are drawn on the host, so a "
        "run may resume on another device",
    )  # fmt: skip
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--keep-every", type=int, default=1000, help="keep OUT/step_N every N steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--stop-after", type=int, default=None, help="stop at this step (resume later)")
    args = p.parse_args(argv)
    if not 0.0 <= args.progress_from < 1.0:
        p.error(f"--progress-from must be in [0, 1), not {args.progress_from}")
    return args


def main() -> None:
    train(parse_args())


if __name__ == "__main__":
    main()
