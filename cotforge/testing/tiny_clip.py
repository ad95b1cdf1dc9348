"""A tiny random CLIP checkpoint, built offline in about a second.

The zero-shot baseline and the ``hf:`` text encoder load any CLIP-like folder through
``AutoModel`` and ``AutoProcessor``; tests need such a folder without a download. This writes
one with the real CLIP architecture at toy sizes (2-layer, 32-wide towers, 32-px images) and a
character-level CLIP tokenizer (every lower-case letter, digit and common punctuation mark is a
token, so any class name encodes). Random weights: its choices are arbitrary, everything around
them is real.

Requires the ``local`` extra (torch, transformers).
"""

from __future__ import annotations

import string
from pathlib import Path

_CHARACTERS = string.ascii_lowercase + string.digits + "-.,'()&/!?:;"
_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
IMAGE_SIDE = 32


def build_tiny_clip(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a loadable random ``CLIPModel`` with its processor into ``out_dir``; return it.

    The same seed gives the same weights. An existing folder is overwritten file by file.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for character in _CHARACTERS:
            vocab[character + suffix] = len(vocab)
    for token in _SPECIAL:
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    side = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_size=side)
    processor = CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIDE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
