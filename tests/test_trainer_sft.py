"""``trainers/sft.py``: TRL's SFTTrainer on a real ``cotforge export`` folder and the tiny random
Qwen2.5-VL, on CPU. The rows come from ``cotforge generate`` against the scripted teacher
(``tests/test_export.py``'s store), so the collator sees what an export really holds.

What is checked: labels keep the assistant turn only; the loss is finite and falls on a repeated
batch; the vision tower stays frozen (and trains when asked); LoRA adapters save and reload with
peft; the command line runs end to end in a subprocess; every bad configuration stops with one
line and no traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import OFFLINE_ENV
from tests.test_export import Generated, export, generated  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
"""trl, torch and transformers are imported inside the tests, never at collection: importing
them loads huggingface_hub, which reads HF_HUB_OFFLINE once, before the autouse ``_offline``
fixture has set it (see tests/test_tiny_model.py)."""

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "trainers" / "configs" / "sft_tiny.yaml"
PAPER_CONFIG = REPO / "trainers" / "configs" / "sft_qwen2_5_vl_7b.yaml"
CPU = {
    "use_cpu": True,
    "bf16": False,
    "activation_checkpointing": False,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "warmup_steps": 0,
    "save_strategy": "no",
    "report_to": "none",
    "logging_steps": 1,
}
"""Settings that make a few steps on the tiny model quick and exact on CPU."""


@dataclass(frozen=True)
class Exported:
    folder: Path
    """A ``cotforge export --configs sft,tapo`` output folder (six sft rows)."""


@pytest.fixture(scope="module")
def exported(generated: Generated, tmp_path_factory: pytest.TempPathFactory) -> Exported:  # noqa: F811
    out = tmp_path_factory.mktemp("export") / "out"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in OFFLINE_ENV.items():
            patch.setenv(name, value)
        code, text = export(generated.store, out, "--configs", "sft,tapo")
    assert code == 0, text
    return Exported(out)


@pytest.fixture(autouse=True)
def _datasets_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow caches of the loaded export go to a temporary folder, not ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    if "datasets" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", str(cache))


def configs(
    tiny_qwen: Path, exported: Exported, out: Path, **overrides: Any
) -> tuple[Any, Any, Any]:
    """(data, training, model) configs for a few CPU steps; ``overrides`` go where they fit."""
    from trl import ModelConfig

    from trainers.sft import CotSFTConfig, SFTDataArguments

    model_keys = set(ModelConfig.__dataclass_fields__)
    data = SFTDataArguments(dataset_name=str(exported.folder))
    model = ModelConfig(
        model_name_or_path=str(tiny_qwen),
        **{k: v for k, v in overrides.items() if k in model_keys},
    )
    training = CotSFTConfig(
        output_dir=str(out),
        **{**CPU, **{k: v for k, v in overrides.items() if k not in model_keys}},
    )
    return data, training, model


def build(
    tiny_qwen: Path,
    exported: Exported,
    out: Path,
    *,
    pixels: tuple[int, int] | None = None,
    **overrides: Any,
) -> tuple[Any, Any]:
    """An SFTTrainer on the export's six rows, and those rows."""
    from trainers.sft import build_trainer, load_sft_dataset

    data, training, model = configs(tiny_qwen, exported, out, **overrides)
    rows = load_sft_dataset(data.dataset_name)
    low, high = pixels or (None, None)
    trainer = build_trainer(rows, training=training, model=model, min_pixels=low, max_pixels=high)
    return trainer, rows


def vision_state(trainer: Any) -> dict[str, Any]:
    from trainers.sft import vision_tower_name

    network = trainer.model
    tower = network.get_submodule(vision_tower_name(network))
    return {name: p.detach().clone() for name, p in tower.named_parameters()}


def trained_loss(trainer: Any) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


# --- defaults -----------------------------------------------------------------------------------


def test_defaults_are_the_papers_stage_1_recipe() -> None:
    from trainers.sft import CotSFTConfig

    config = CotSFTConfig(output_dir="unused", use_cpu=True)
    assert config.learning_rate == 5e-6
    assert str(config.lr_scheduler_type.value) == "cosine"
    assert config.num_train_epochs == 10
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (4, 4)
    assert (config.warmup_steps, config.weight_decay, config.max_length) == (6, 0.1, 4096)
    assert config.assistant_only_loss and config.freeze_vision


def test_the_paper_config_file_parses_to_the_papers_settings() -> None:
    from trainers.sft import parse_args

    # use_cpu: bf16 is refused on a machine without a bf16 GPU unless training on the CPU.
    data, training, model = parse_args(["--config", str(PAPER_CONFIG), "--use_cpu", "true"])
    assert model.model_name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (model.dtype, model.use_peft) == ("bfloat16", False)
    assert (data.dataset_config, data.dataset_train_split) == ("sft", "train")
    assert (data.min_pixels, data.max_pixels) == (1024, 589824)
    assert training.learning_rate == 5e-6 and training.num_train_epochs == 10
    assert training.bf16 and training.freeze_vision and training.assistant_only_loss


# --- labels, loss, the frozen tower -------------------------------------------------------------


def test_labels_keep_only_the_assistant_turn(
    tiny_qwen: Path, exported: Exported, tmp_path: Path
) -> None:
    trainer, rows = build(tiny_qwen, exported, tmp_path / "out")
    tokenizer = trainer.processing_class.tokenizer
    batch = trainer.data_collator([rows[0], rows[1]])
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for n in range(2):
        ids, labels = batch["input_ids"][n], batch["labels"][n]
        kept = (labels != -100).nonzero().flatten()
        # One contiguous run, and exactly the target followed by the end of the turn.
        assert kept.tolist() == list(range(int(kept[0]), int(kept[-1]) + 1))
        assert (labels[kept] == ids[kept]).all()
        target = rows[n]["messages"][2]["content"][0]["text"]
        assert tokenizer.decode(ids[kept]) == target + "<|im_end|>\n"
        prompt = tokenizer.decode(ids[: int(kept[0])])
        assert prompt.startswith("<|im_start|>system\n")
        assert rows[n]["messages"][1]["content"][1]["text"] in prompt
        assert prompt.endswith("<|im_start|>assistant\n")
        assert (ids[: int(kept[0])] == image_token).sum() > 0
        assert (labels[int(kept[-1]) + 1 :] == -100).all()  # padding


def test_pixel_budget_reaches_the_processor(
    tiny_qwen: Path, exported: Exported, tmp_path: Path
) -> None:
    trainer, rows = build(tiny_qwen, exported, tmp_path / "out", pixels=(56 * 56, 56 * 56))
    tokenizer = trainer.processing_class.tokenizer
    batch = trainer.data_collator([rows[0]])
    # 56 x 56 pixels: 4 x 4 patches of 14, merged 2 x 2 into 4 tokens (the default gives 16).
    assert (batch["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum() == 4


def test_loss_falls_on_a_repeated_batch_and_the_vision_tower_stays_frozen(
    tiny_qwen: Path, exported: Exported, tmp_path: Path
) -> None:
    from trainers.sft import build_trainer

    data, training, model = configs(
        tiny_qwen, exported, tmp_path / "out", max_steps=5, learning_rate=1e-3
    )
    from trainers.sft import load_sft_dataset

    # Two rows and a batch of two: every step sees the same batch.
    rows = load_sft_dataset(data.dataset_name).select([0, 1])
    trainer = build_trainer(rows, training=training, model=model)
    tower_before = vision_state(trainer)
    language_before = trainer.model.lm_head.weight.detach().clone()
    assert not any(p.requires_grad for p in tower_before.values())
    trainer.train()
    losses = trained_loss(trainer)
    assert len(losses) == 5
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    for name, after in vision_state(trainer).items():
        assert after.equal(tower_before[name]), name
    assert not trainer.model.lm_head.weight.equal(language_before)


def test_freeze_vision_false_trains_the_tower(
    tiny_qwen: Path, exported: Exported, tmp_path: Path
) -> None:
    trainer, _ = build(
        tiny_qwen, exported, tmp_path / "out", freeze_vision=False, max_steps=1, learning_rate=1e-3
    )
    before = vision_state(trainer)
    trainer.train()
    after = vision_state(trainer)
    changed = [name for name in before if not after[name].equal(before[name])]
    assert len(changed) > len(before) // 2


# --- LoRA ---------------------------------------------------------------------------------------


def test_lora_adapters_save_and_reload(tiny_qwen: Path, exported: Exported, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "lora"
    trainer, rows = build(
        tiny_qwen, exported, out, use_peft=True, lora_r=4, max_steps=2, learning_rate=1e-2
    )
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any(".visual." in name for name in trainable)  # the frozen tower is left out
    trainer.train()
    trainer.save_model(str(out))
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()

    batch = trainer.data_collator([rows[0]])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    trained = trainer.model.eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        reloaded = PeftModel.from_pretrained(base, out).eval()
        assert torch.allclose(reloaded(**inputs).logits, trained(**inputs).logits, atol=1e-5)
    assert not torch.allclose(base_logits, trained(**inputs).logits.detach(), atol=1e-5)


# --- command line -------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "trainers.sft", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_command_line_trains_and_saves(tiny_qwen: Path, exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_cli(
        "--config",
        str(TINY_CONFIG),
        "--model_name_or_path",
        str(tiny_qwen),
        "--dataset_name",
        str(exported.folder),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"trained model saved to {out}" in done.stdout
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name


def test_bad_config_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "model_name_or_path: m\ndataset_name: d\nlearning_rat: 1.0e-5\n", encoding="utf-8"
    )
    done = run_cli("--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {config}: unknown key(s) learning_rat; see `python -m trainers.sft --help` "
        f"for the keys"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{missing}"], "config file {missing} cannot be read"),
        (["--learning_rate", "fast"], "invalid float value: 'fast'"),
        (["--lora_rank", "8"], "unknown option(s) --lora_rank 8"),
        (["--model_name_or_path", ""], "model_name_or_path is not set"),
        (["--dataset_name", "{tmp}/nowhere"], "dataset folder {tmp}/nowhere does not exist"),
        (["--dataset_config", "nope"], "has no config 'nope' (it has sft, tapo)"),
        (["--dataset_config", "tapo"], "config 'tapo' of {export} has no images, messages"),
        (["--dataset_train_split", "test"], "has no split 'test' (it has train)"),
        (["--model_name_or_path", "./no/model"], "model folder no/model does not exist"),
        (["--model_name_or_path", "{tmp}"], "is not a transformers image-text-to-text model"),
        (["--max_pixels", "many"], "invalid int value: 'many'"),
        (["--resume_from_checkpoint", "{tmp}/ckpt"], "resume_from_checkpoint {tmp}/ckpt: no such"),
        (["--min_pixels", "5000", "--max_pixels", "4000"], "need 0 < min_pixels <= max_pixels"),
        (["--load_in_4bit", "true"], "load_in_4bit quantizes the frozen base model"),
        (["--load_in_4bit", "true", "--use_peft", "true"], "no CUDA device is visible"),
    ],
)
def test_bad_settings_stop_with_one_line(
    args: list[str],
    message: str,
    tiny_qwen: Path,
    exported: Exported,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    from trainers.sft import main

    if "no CUDA device" in message and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    names = {"missing": tmp_path / "missing.yaml", "tmp": tmp_path, "export": exported.folder}
    base = ["--model_name_or_path", str(tiny_qwen), "--dataset_name", str(exported.folder)]
    base += ["--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    code = main([*base, *(arg.format(**names) for arg in args)])
    err = capsys.readouterr().err
    assert code == 2
    # One line, after whatever progress bars the loading drew.
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("error: ") and message.format(**names) in last, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
