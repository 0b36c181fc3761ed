"""Train the tiny LLaDA with the LLaDA SFT objective on the task families.

Objective (LLaDA SFT): the prompt is never masked; each response position (the response padded with EOS to
the canvas) is masked with probability t ~ U(eps, 1) drawn per sequence; the loss is the cross-entropy on
masked positions weighted by 1/t, divided by the response length. Reproducible from ``--seed``.
Usage: ``python -m vllm_elastic.train --out models/llada-tiny --minutes 55``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.checkpoint import load_model, save_model
from ..core.config import LLaDAConfig
from ..core.model import LLaDAModel
from ..tasks import FAMILIES, load_jsonl
from ..tasks.prompting import encode_prompt
from .tokenizer import build_tokenizer, collect_words, save_tokenizer

MIN_MASK_RATIO = 1e-3
CANVAS_CHOICES = (64, 128, 256)
CANVAS_WEIGHTS = (0.5, 0.25, 0.25)


def tiny_config(tokenizer, args: argparse.Namespace) -> LLaDAConfig:
    vocab = -(-len(tokenizer) // 64) * 64  # round up to a multiple of 64
    return LLaDAConfig(
        d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_heads, n_layers=args.n_layers,
        mlp_hidden_size=args.mlp, vocab_size=vocab, embedding_size=vocab, rope_theta=10000.0,
        max_sequence_length=2048, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        extra={"bos_token_id": tokenizer.bos_token_id, "torch_dtype": "float32"},
    )


def make_batch(rng: random.Random, tokenizer, batch: int, held_out: set[str],
               arith_fraction: float | None = None, canvas_weights=CANVAS_WEIGHTS):
    """ids [B, T], response mask [B, T] (True on the response and its EOS tail)."""
    canvas = rng.choices(CANVAS_CHOICES, canvas_weights)[0]
    pairs = []
    while len(pairs) < batch:
        if arith_fraction is None:
            family = FAMILIES[rng.choice(sorted(FAMILIES))]
        else:
            family = FAMILIES["arith" if rng.random() < arith_fraction else "code"]
        problem = family.make_problem(rng)
        if problem["prompt"] in held_out:
            continue
        prompt = encode_prompt(tokenizer, problem["prompt"], chat=rng.random() < 0.5)
        response = tokenizer.encode(problem["response"], add_special_tokens=False)
        pairs.append((prompt, response + [tokenizer.eos_token_id]))
    width = max(len(p) for p, _ in pairs) + canvas
    ids = torch.full((batch, width), tokenizer.eos_token_id, dtype=torch.long)  # [B, T]
    is_response = torch.zeros(batch, width, dtype=torch.bool)  # [B, T]
    for i, (p, r) in enumerate(pairs):
        ids[i, : len(p)] = torch.tensor(p)
        ids[i, len(p) : len(p) + len(r)] = torch.tensor(r[: width - len(p)])
        is_response[i, len(p) :] = True
    return ids, is_response


def sft_loss(model: LLaDAModel, ids: torch.Tensor, is_response: torch.Tensor, mask_id: int):
    b = ids.shape[0]
    t = (1 - MIN_MASK_RATIO) * torch.rand(b, 1) + MIN_MASK_RATIO  # [B, 1]
    masked = (torch.rand(ids.shape) < t) & is_response  # [B, T]
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    logits = model(noisy)  # [B, T, V]
    token_loss = F.cross_entropy(logits[masked], ids[masked], reduction="none")  # [M]
    weight = 1.0 / (t.expand_as(ids)[masked] * is_response.sum(1, keepdim=True).expand_as(ids)[masked])
    return (token_loss * weight).sum() / b


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    tokenizer = build_tokenizer(collect_words())
    if args.init_from:  # a later stage of a curriculum: same tokenizer, weights from the last stage
        model = load_model(args.init_from)
        cfg = model.config
        model.train()
    else:
        cfg = tiny_config(tokenizer, args)
        model = LLaDAModel(cfg)
    save_tokenizer(tokenizer, out)
    held_out = {row["prompt"] for f in args.held_out for row in load_jsonl(f)}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    log = open(out / "train_log.jsonl", "a" if args.init_from else "w")
    start, ema = time.time(), None
    bar = tqdm(range(args.steps), desc="train")
    for step in bar:
        elapsed = (time.time() - start) / 60
        if elapsed > args.minutes or step == args.stop_after:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        ids, is_response = make_batch(rng, tokenizer, args.batch, held_out, args.arith_fraction,
                                      args.canvas_weights)
        loss = sft_loss(model, ids, is_response, cfg.mask_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
        if step % 25 == 0:
            log.write(json.dumps({"stage": args.stage, "step": step, "minutes": round(elapsed, 2), "loss": loss.item(),
                                  "loss_ema": ema, "lr": opt.param_groups[0]["lr"]}) + "\n")
            log.flush()
        if step and step % args.save_every == 0:
            save_model(model, out)
    save_model(model, out)
    print(f"saved {out} after {step} steps, {(time.time() - start) / 60:.1f} min, loss ema {ema:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="models/llada-tiny")
    p.add_argument("--held-out", nargs="*", default=["data/arith_test.jsonl", "data/code_test.jsonl"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=55.0)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stage", type=int, default=1, help="curriculum stage (recorded in the log)")
    p.add_argument("--init-from", default=None, help="continue from this checkpoint (curriculum stage)")
    p.add_argument("--stop-after", type=int, default=None, help="stop at this step (schedule unchanged)")
    p.add_argument("--arith-fraction", type=float, default=None, help="share of arith problems")
    p.add_argument("--canvas-weights", type=float, nargs=3, default=list(CANVAS_WEIGHTS),
                   help=f"sampling weights of the canvas lengths {CANVAS_CHOICES}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
