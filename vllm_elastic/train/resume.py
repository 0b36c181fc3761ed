"""Training state on disk: written atomically every few minutes, read back to resume a run.

``OUT/state.pt`` holds the weights, the optimizer, the step and the run's arguments; ``OUT/model/`` is
the same weights in the HF layout with the tokenizer (what ``eval`` and vLLM load), and
``OUT/step_N/`` keeps a snapshot every ``keep_every`` steps for the accuracy-against-steps curve.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..core.checkpoint import save_model
from ..core.model import LLaDAModel

STATE_NAME = "state.pt"


def save_state(
    out: Path, model: LLaDAModel, opt: torch.optim.Optimizer, step: int, extra: dict
) -> None:
    """``step`` is the number of updates done; the next run starts there."""
    tmp = out / (STATE_NAME + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, **extra}, tmp)
    os.replace(tmp, out / STATE_NAME)  # NOTE: a kill mid-write leaves the previous state intact


def load_state(out: Path) -> dict | None:
    path = out / STATE_NAME
    # on the host: a run may resume on another device than the one that saved it
    return torch.load(path, weights_only=False, map_location="cpu") if path.exists() else None


def export(out: Path, model: LLaDAModel, tokenizer, step: int, keep_every: int) -> Path:
    """Write ``OUT/model`` (HF layout + tokenizer), and ``OUT/step_N`` at every ``keep_every`` steps."""
    target = out / "model"
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    if keep_every and step % keep_every == 0:
        snapshot = out / f"step_{step}"
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(target, snapshot)
    return target
