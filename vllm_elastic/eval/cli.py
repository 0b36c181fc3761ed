"""Command-line knobs shared by ``eval`` and ``bench``: every DecodeSettings field as a flag."""

from __future__ import annotations

import argparse

from ..core.settings import DecodeSettings, model_defaults

KNOBS = {
    "window": int, "threshold": float, "gamma": float, "track_num": int, "tokens_per_step": int,
    "cosine": str, "refresh": str, "refresh_mode": str, "refresh_start": str, "steps": int,
    "block_length": int, "temperature": float, "remasking": str, "cache": str, "seed": int,
    "full_refresh_every": int,
}


def add_decoder_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "decoder settings (defaults: the model's generation_config.json \"elastic\" block, "
        "else the authors' generate_with_elastic_cache)"
    )
    for name, kind in KNOBS.items():
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    group.add_argument("--block-caching", default=None, choices=["true", "false"])
    group.add_argument("--early-stop", default=None, choices=["true", "false"],
                       help="stop at the committed EOS, as the vLLM engine does (default false)")


def settings_from_args(args: argparse.Namespace, method: str, gen_length: int) -> DecodeSettings:
    """DecodeSettings from the flags that were given, over the defaults of the checkpoint
    ``args.model`` (``model_defaults``; ValueError with the reason if invalid)."""
    raw = {k: getattr(args, k) for k in KNOBS if getattr(args, k) is not None}
    for flag in ("block_caching", "early_stop"):
        if getattr(args, flag, None) is not None:
            raw[flag] = getattr(args, flag)
    raw.update(method=method, gen_length=gen_length)
    return DecodeSettings.from_dict(raw, model_defaults(args.model))
