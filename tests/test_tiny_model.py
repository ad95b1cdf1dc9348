"""The tiny random Qwen2.5-VL: loads through the Auto classes and runs generate/forward with
images on CPU, is reproducible, and never clobbers a folder it did not write."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cotforge.testing import tiny
from cotforge.testing.tiny import MARKER, SPECIAL_TOKENS, build_tiny_qwen2_5_vl, chat_template

pytestmark = pytest.mark.slow
"""torch and transformers are imported inside the tests, never at collection: importing them
loads huggingface_hub, which reads HF_HUB_OFFLINE once, before the autouse ``_offline`` fixture
has set it. The ``tiny_qwen`` fixture skips when they are missing."""


def _photo(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8))


def _load(folder: Path) -> tuple[Any, Any]:
    import transformers

    model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    processor = transformers.AutoProcessor.from_pretrained(folder)
    return model, processor


def test_auto_classes_load_it_as_qwen2_5_vl(tiny_qwen: Path) -> None:
    model, processor = _load(tiny_qwen)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    tokenizer = processor.tokenizer
    # Every special token is one token, and the config's vision ids point at the right ones.
    for token in SPECIAL_TOKENS:
        assert tokenizer.encode(token, add_special_tokens=False) == [
            tokenizer.convert_tokens_to_ids(token)
        ]
    config = model.config
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.text_config.vocab_size == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_chat_template_is_the_official_one_byte_for_byte(tiny_qwen: Path) -> None:
    """TRL recognises models by exact template comparison; the provenance note must not leak."""
    _, processor = _load(tiny_qwen)
    assert processor.chat_template == chat_template()
    assert not chat_template().startswith("{#")
    if importlib.util.find_spec("trl") is not None:
        import trl

        shipped = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja"
        assert chat_template() == shipped.read_text(encoding="utf-8")


def test_generate_and_forward_run_with_images_on_cpu(tiny_qwen: Path) -> None:
    model, processor = _load(tiny_qwen)
    processor.tokenizer.padding_side = "left"
    conversations = [
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": _photo(640, 480)},
                    {"type": "text", "text": "What is the specific type of airplane?"},
                ],
            },
        ],
        [{"role": "user", "content": [{"type": "text", "text": "No image in this one."}]}],
    ]
    inputs = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    # A 640x480 photo is capped at MAX_PIXELS: at most 16 merged image tokens.
    image_tokens = (inputs["input_ids"][0] == model.config.image_token_id).sum().item()
    assert 1 <= image_tokens <= tiny.MAX_PIXELS // (28 * 28)
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 4)

    import torch

    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    # The loss reaches the vision tower: the image really went through the model.
    vision_grads = [p.grad for name, p in model.named_parameters() if "visual" in name]
    assert vision_grads and all(g is not None for g in vision_grads)
    assert sum(g.abs().sum() for g in vision_grads) > 0


def test_rebuilding_with_the_same_seed_is_skipped(tiny_qwen: Path) -> None:
    weights = tiny_qwen / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_qwen2_5_vl(tiny_qwen) == tiny_qwen
    assert weights.stat().st_mtime_ns == before


def test_same_seed_same_files_other_seed_other_weights(tiny_qwen: Path, tmp_path: Path) -> None:
    again = build_tiny_qwen2_5_vl(tmp_path / "again")
    names = sorted(path.name for path in tiny_qwen.iterdir())
    assert names == sorted(path.name for path in again.iterdir())
    for name in names:
        assert (again / name).read_bytes() == (tiny_qwen / name).read_bytes(), name

    other = build_tiny_qwen2_5_vl(tmp_path / "again", seed=1)
    assert other == tmp_path / "again"
    assert (other / "model.safetensors").read_bytes() != (
        tiny_qwen / "model.safetensors"
    ).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_qwen / "tokenizer.json").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no staging folder left behind


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not written by build_tiny_qwen2_5_vl"):
        build_tiny_qwen2_5_vl(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert not (tmp_path / MARKER).exists()
