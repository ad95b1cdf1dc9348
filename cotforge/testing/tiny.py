"""A tiny random Qwen2.5-VL checkpoint, built offline in about a second.

Teacher, serving and trainer tests need a real ``AutoModelForImageTextToText`` folder (config,
safetensors weights, tokenizer, image processor, chat template) that runs ``generate()`` and
``forward()`` on CPU with images, but a download is impossible offline and a real checkpoint is
gigabytes. This builds one with the real Qwen2.5-VL architecture at toy sizes: a byte-level BPE
tokenizer trained here with the Qwen special tokens, a 2-layer 64-wide language model, a 2-block
vision tower, and an image processor capped at 112x112 pixels so an image costs 16 tokens.
Its weights are random, so its text is gibberish; everything around the text is real.

Requires the ``local`` extra (torch, torchvision, transformers).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

BUILDER_VERSION = 1
"""Bumped whenever the files this module writes change, so an old build is rebuilt, not reused."""
MARKER = "cotforge-tiny.json"
"""Written last into a finished build: it says the folder is ours (safe to replace) and complete."""

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen2.5-VL's special tokens, in the checkpoints' order: the chat template, the processor
(image/video placeholders) and the model config (vision token ids) all refer to them."""

VOCAB_SIZE = 512
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112
"""Image budget: every image is resized to between 2x2 and 4x4 merged 28-px patches, so an
image costs 1-16 tokens and the vision tower stays cheap on CPU whatever the input size."""

_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer split (``transformers.models.qwen2.tokenization_qwen2``)."""

_CORPUS = (
    "You are a helpful assistant. What is the specific type of airplane shown in the image?",
    "<analysis> The aircraft has a white fuselage, two engines under the wings, a swept wing, "
    "a blue tail fin and a rounded nose. </analysis>",
    "<options> Boeing 737-800 \n Airbus A320 \n Boeing 757-200 \n Embraer 190 </options>",
    "<comparison> The Boeing 737-800 has a flat-bottomed engine nacelle, while the Airbus A320 "
    "has round nacelles and a longer nose gear. </comparison>",
    "<prediction> The prediction is: Boeing 737-800 </prediction>",
    "<think> Analysis of Visual Features. Candidate Subcategories. Comparison Process. Final "
    "Prediction. The analysis of candidate subcategories: A, B, C. </think>",
    "<answer> Cessna 172 </answer> bird car dog flower pet species breed colour shape parts",
)
"""Fixed training text for the BPE merges: enough that prompts and tags tokenise into a few
hundred tokens rather than one per byte; the exact wording only affects which merges exist."""


def build_tiny_qwen2_5_vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a loadable random Qwen2.5-VL checkpoint into ``out_dir`` and return ``out_dir``.

    ``AutoModelForImageTextToText.from_pretrained(out_dir)`` and
    ``AutoProcessor.from_pretrained(out_dir)`` load it; ``transformers serve out_dir`` serves it.
    A folder already built with the same ``seed`` (and builder version) is kept as it is, so
    session fixtures and repeated CLI calls cost nothing; the same seed always gives the same
    weights. The build happens in a sibling temporary folder that is renamed into place, so a
    killed or concurrent build never leaves a half-written ``out_dir`` behind.

    Raises :class:`ValueError` when ``out_dir`` holds files that this function did not write,
    rather than deleting someone's data.
    """
    out_dir = Path(out_dir)
    wanted = {"builder_version": BUILDER_VERSION, "seed": seed}
    existing = _read_marker(out_dir)
    if existing == wanted:
        return out_dir
    if existing is None and out_dir.exists() and any(out_dir.iterdir()):
        msg = (
            f"{out_dir} is not empty and was not written by build_tiny_qwen2_5_vl; "
            f"pass an empty or new folder"
        )
        raise ValueError(msg)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    try:
        _write_checkpoint(staging, seed=seed)
        (staging / MARKER).write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(staging, out_dir)
        except OSError:
            # Another process finished the same build first; its folder is as good as ours.
            if _read_marker(out_dir) != wanted:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def chat_template() -> str:
    """The Qwen2.5-VL chat template, byte-identical to the one the official checkpoints ship.

    The packaged file starts with a one-line Jinja comment saying where it came from; that line
    is dropped here because TRL recognises models by exact template comparison, and the tiny
    model must be recognised as Qwen2.5-VL like the real one.
    """
    text = resources.files(__package__).joinpath("qwen2_5_vl.jinja").read_text(encoding="utf-8")
    note, _, template = text.partition("\n")
    if not note.startswith("{#"):
        msg = "cotforge/testing/qwen2_5_vl.jinja must start with its one-line provenance comment"
        raise RuntimeError(msg)
    return template


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_checkpoint(folder: Path, *, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    processor = _processor()
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = _config(vocab_size=len(tokenizer), ids=ids)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _config(*, vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig

    hidden = 64
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # head_dim 16: multimodal RoPE splits its 8 frequencies over (time, height, width).
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "out_hidden_size": hidden,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def _processor() -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = _tokenizer()
    template = chat_template()
    tokenizer.chat_template = template
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=template,
    )


def _tokenizer() -> Any:
    """A byte-level BPE trained on :data:`_CORPUS`, wrapped as transformers' Qwen2Tokenizer.

    Byte-level means any text encodes (unknown words fall back to bytes), so prompts from real
    datasets work; training is single-threaded on a fixed corpus, hence deterministic.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(pair) for pair in model["merges"]],
        eos_token="<|im_end|>",
        model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer
