"""Stage 1 of Fine-R1: chain-of-thought SFT with TRL's ``SFTTrainer`` on the ``sft`` export.

Run it as ``python trainers/sft.py --config FILE.yaml [--key value ...]`` or
``python -m trainers.sft ...``; the YAML file and the flags set the fields of three dataclasses,
flags winning (TRL's ``TrlParser``):

- :class:`CotSFTConfig`: TRL's ``SFTConfig`` with the released Stage-1 recipe as its defaults
  (``LLaMA-Factory/cot_sft_{3b,7b}.sh`` of PKU-ICST-MIPL/FineR1_ICLR2026: lr 5e-6 cosine,
  10 epochs, 4 x 4 accumulation per device on 4 GPUs, 6 warm-up steps, weight decay 0.1,
  4096 tokens, bf16, full fine-tune), loss on the assistant turn only and the vision tower frozen;
- :class:`SFTDataArguments`: the exported dataset (a folder or a Hub id), its config and split,
  and the processor's image budget (``min_pixels``/``max_pixels``);
- TRL's ``ModelConfig``: the model (any ``AutoModelForImageTextToText`` checkpoint; Qwen2.5-VL is
  the reference), its dtype, and LoRA (``use_peft``) or QLoRA (``load_in_4bit``) options.

Loss on the assistant turn only: the export's rows are conversational (``images`` + ``messages``),
the shape TRL's vision collator takes unchanged, so this uses TRL's ``assistant_only_loss``. It
renders the rows with a training variant of the model's chat template whose ``{% generation %}``
markers wrap the assistant turn (TRL 1.16 ships one for Qwen2/2.5/3-VL and swaps it in; the
rendering is byte-identical), and transformers >= 5.18 keeps that mask aligned after each image
placeholder is expanded to its patch tokens. System prompt, question, image tokens and padding get
label -100; the target and its closing ``<|im_end|>`` are trained, so the model learns to stop.
The alternative, ``completion_only_loss``, would need the rows rewritten as prompt/completion
pairs, which TRL's vision collator tokenises as two separate strings: the token boundary can differ
from the chat-rendered sequence that generation sees.

The vision tower is the module ``model.get_encoder(modality="image")`` names (Qwen2.5-VL's
``model.visual``, its merger included, as LLaMA-Factory freezes it by default). Full fine-tuning
sets its parameters' ``requires_grad`` to False; LoRA leaves it out of the adapted modules.

Built and tested against trl 1.16.0, transformers 5.24.0, peft 0.21.2 and accelerate 1.15.0. It
overrides no private method; what it relies on that drifts between releases is TRL's
``assistant_only_loss`` for vision datasets and its training chat templates.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotforge.errors import ConfigError, CotforgeError, MissingExtraError

try:
    from trl import ModelConfig, SFTConfig, TrlParser
except ImportError as err:  # pragma: no cover - depends on the environment
    msg = f"trainers/sft.py needs {err.name}: pip install 'cotforge[train]'"
    raise MissingExtraError(msg) from err

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, ProcessorMixin
    from trl import SFTTrainer

SFT_COLUMNS = ("images", "messages")
"""The columns of the export's ``sft`` config that training reads; the others are provenance."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")
"""``name`` or ``owner/name``: what is looked up on the Hub when no such local path exists."""


@dataclass
class CotSFTConfig(SFTConfig):
    """``SFTConfig`` whose defaults are Fine-R1's Stage-1 recipe, plus ``freeze_vision``.

    Every other ``SFTConfig`` / ``TrainingArguments`` field keeps TRL's default and can be set in
    the YAML file or on the command line.
    """

    learning_rate: float = field(default=5e-6, metadata={"help": "Peak learning rate (paper)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule (paper)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs (paper)."})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Rows per device and step (released script, 4 GPUs)."}
    )
    gradient_accumulation_steps: int = field(
        default=4, metadata={"help": "Steps per optimizer update (released script)."}
    )
    warmup_steps: float = field(default=6, metadata={"help": "Warm-up steps (released script)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (released)."})
    max_length: int | None = field(
        default=4096,
        metadata={"help": "Longest tokenised row, image tokens included (released cutoff_len)."},
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    assistant_only_loss: bool = field(
        default=True,
        metadata={"help": "Train on the assistant turn only (the target and its end token)."},
    )
    freeze_vision: bool = field(
        default=True,
        metadata={"help": "Keep the vision tower (encoder and merger) frozen, as the paper does."},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )

    def __post_init__(self) -> None:
        # TRL defaults the deprecated alias to True, which makes transformers warn on every run;
        # checkpointing stays on by default (as in the released recipe) through the new name.
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        super().__post_init__()


@dataclass
class SFTDataArguments:
    """Where the training rows come from, and the processor's image budget. The names are those
    of TRL's ``ScriptArguments`` and of ``trainers/tapo.py``, so one habit serves both stages."""

    dataset_name: str = field(
        metadata={"help": "`cotforge export` output folder, or the Hub id it was pushed to."}
    )
    dataset_config: str = field(default="sft", metadata={"help": "The export's config to read."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Smallest image area the processor resizes to (Qwen2-VL family)."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Largest image area the processor resizes to (Qwen2-VL family; LLaMA-Factory, "
            "which ran the released SFT, caps it at 589824)."
        },
    )


# --- command line ------------------------------------------------------------------------------


class _Parser(TrlParser):
    """``TrlParser`` that reports bad values as :class:`ConfigError` instead of printing the
    usage of some 200 training arguments and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message}; see `python -m trainers.sft --help`")


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[SFTDataArguments, CotSFTConfig, ModelConfig]:
    """The three configs from ``--config FILE.yaml`` and command-line overrides.

    Raises :class:`ConfigError` for a missing or unreadable file, a key or flag no config has, a
    value of the wrong type, or a combination the configs refuse.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser((SFTDataArguments, CotSFTConfig, ModelConfig))
    source = "the command line"
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            msg = "--config needs a YAML file: --config FILE.yaml"
            raise ConfigError(msg)
        source = args[at + 1]
        _check_keys(Path(source), known={action.dest for action in parser._actions})
    try:
        data, training, model, unknown = parser.parse_args_and_config(
            args, return_remaining_strings=True
        )
    except (ValueError, TypeError) as err:
        # Raised by the configs' own checks (``__post_init__``) on values that parse but clash.
        msg = f"bad configuration in {source}: {_first_line(err)}"
        raise ConfigError(msg) from err
    if unknown:
        msg = f"unknown option(s) {' '.join(unknown)}; see `python -m trainers.sft --help`"
        raise ConfigError(msg)
    if not model.model_name_or_path:
        msg = f"model_name_or_path is not set in {source}; give a model folder or a Hub id"
        raise ConfigError(msg)
    return data, training, model


def _check_keys(path: Path, *, known: set[str]) -> None:
    """Refuse a missing or malformed config file, or one with keys no config has, before the
    configs are built: their own checks would otherwise speak first about another problem."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        msg = f"config file {path} cannot be read ({_first_line(err)}); pass a YAML file"
        raise ConfigError(msg) from err
    except yaml.YAMLError as err:
        msg = f"{path} is not valid YAML ({_first_line(err)}); fix the file"
        raise ConfigError(msg) from err
    if not isinstance(config, dict):
        msg = f"{path} must hold a YAML mapping of option: value"
        raise ConfigError(msg)
    unknown = [str(key) for key in config if key not in known and key != "env"]
    if unknown:
        msg = (
            f"{path}: unknown key(s) {', '.join(unknown)}; see `python -m trainers.sft --help` "
            f"for the keys"
        )
        raise ConfigError(msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, train, save; a :class:`CotforgeError` becomes one line on stderr and its exit code."""
    try:
        data, training, model = parse_args(argv)
        output_dir = train(data, training, model)
    except CotforgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"trained model saved to {output_dir}")
    return 0


# --- training ----------------------------------------------------------------------------------


def train(data: SFTDataArguments, training: CotSFTConfig, model: ModelConfig) -> Path:
    """Load the rows and the model, train (resuming when ``resume_from_checkpoint`` is set) and
    save the model (or LoRA adapter) and processor to ``output_dir``; return that folder."""
    check_quantization(model)  # before a dataset download that would be wasted
    resume = training.resume_from_checkpoint
    if resume is not None and not Path(resume).is_dir():
        msg = f"resume_from_checkpoint {resume}: no such folder; give a checkpoint-N folder"
        raise ConfigError(msg)
    dataset = load_sft_dataset(
        data.dataset_name, config=data.dataset_config, split=data.dataset_train_split
    )
    trainer = build_trainer(
        dataset,
        training=training,
        model=model,
        min_pixels=data.min_pixels,
        max_pixels=data.max_pixels,
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training.output_dir)
    trainer.end()
    return Path(str(training.output_dir))


def build_trainer(
    dataset: Dataset,
    *,
    training: CotSFTConfig,
    model: ModelConfig,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> SFTTrainer:
    """An ``SFTTrainer`` for ``dataset`` (rows with ``images`` and ``messages``), the model
    loaded, its vision tower frozen or left out of LoRA as ``training.freeze_vision`` says."""
    from trl import SFTTrainer

    check_quantization(model)
    missing = [name for name in SFT_COLUMNS if name not in dataset.column_names]
    if missing:
        msg = (
            f"the training rows have no {', '.join(missing)} column (they have "
            f"{', '.join(dataset.column_names)}); train on the `sft` config of `cotforge export`"
        )
        raise ConfigError(msg)
    processor = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels)
    _check_chat_template(processor, training, model.model_name_or_path or "")
    network = load_model(model, trust_remote_code=training.trust_remote_code)
    if training.freeze_vision and not model.use_peft:
        freeze_vision_tower(network)
    trainer = SFTTrainer(
        model=network,
        args=training,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(network, model, freeze_vision=training.freeze_vision),
    )
    return trainer


def load_sft_dataset(dataset: str, *, config: str = "sft", split: str = "train") -> Dataset:
    """One split of an exported config, from a folder or the Hub; refuses a missing folder, a
    config or split the dataset does not have, and rows without ``images`` and ``messages``."""
    from datasets import get_dataset_config_names, get_dataset_split_names, load_dataset

    where = _local_or_hub(dataset, what="dataset")
    try:
        configs = get_dataset_config_names(where)
        if config not in configs:
            msg = (
                f"dataset {dataset} has no config {config!r} (it has {', '.join(configs)}); "
                f"set dataset_config to sft, the config `cotforge export` writes for SFT"
            )
            raise ConfigError(msg)
        splits = get_dataset_split_names(where, config)
        if split not in splits:
            msg = (
                f"config {config!r} of {dataset} has no split {split!r} (it has "
                f"{', '.join(splits)}); set dataset_train_split to one of them"
            )
            raise ConfigError(msg)
        rows = load_dataset(where, config, split=split)
    except OSError as err:  # FileNotFoundError for empty folders, ConnectionError offline
        msg = (
            f"cannot load dataset {dataset} ({_first_line(err)}); pass a `cotforge export` "
            f"output folder, or a Hub id that is downloaded or reachable"
        )
        raise ConfigError(msg) from err
    missing = [name for name in SFT_COLUMNS if name not in rows.column_names]
    if missing:
        msg = (
            f"config {config!r} of {dataset} has no {', '.join(missing)} column; it is not an "
            f"SFT config: set dataset_config to sft"
        )
        raise ConfigError(msg)
    return rows


def load_processor(
    model: ModelConfig, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> ProcessorMixin:
    """The model's processor (tokenizer, image processor, chat template), with the image area
    budget of a Qwen2-VL-family processor narrowed to ``min_pixels``..``max_pixels``.

    The budget goes in as the image processor's ``size`` (``shortest_edge``/``longest_edge``
    are areas there): transformers 5 deprecates ``min_pixels``/``max_pixels`` keywords.
    """
    from transformers import AutoProcessor, ProcessorMixin

    name = model.model_name_or_path or ""
    where = _local_or_hub(name, what="model")
    try:
        processor = AutoProcessor.from_pretrained(where, revision=model.model_revision)
        if min_pixels is not None or max_pixels is not None:
            size = _pixel_budget(processor, name, min_pixels=min_pixels, max_pixels=max_pixels)
            processor = AutoProcessor.from_pretrained(
                where, revision=model.model_revision, size=size
            )
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(_load_failure(name, err)) from err
    if not isinstance(processor, ProcessorMixin):
        msg = (
            f"model {name} has a tokenizer but no multimodal processor; SFT on images needs an "
            f"image-text-to-text model such as Qwen/Qwen2.5-VL-7B-Instruct"
        )
        raise ConfigError(msg)
    return processor


def _pixel_budget(
    processor: Any, name: str, *, min_pixels: int | None, max_pixels: int | None
) -> dict[str, int]:
    """The ``size`` of a Qwen2-VL-family image processor (the one kind whose ``size`` bounds
    an image's area; they are the ones returning ``image_grid_thw``) with the bounds given."""
    image_processor = getattr(processor, "image_processor", None)
    inputs = getattr(image_processor, "model_input_names", ())
    if image_processor is None or "image_grid_thw" not in inputs:
        msg = (
            f"min_pixels/max_pixels bound the image area of Qwen2-VL-family processors; the "
            f"processor of {name} has no such budget: remove them"
        )
        raise ConfigError(msg)
    low = min_pixels if min_pixels is not None else image_processor.size["shortest_edge"]
    high = max_pixels if max_pixels is not None else image_processor.size["longest_edge"]
    if not 0 < low <= high:
        msg = f"need 0 < min_pixels <= max_pixels; got {low} and {high}"
        raise ConfigError(msg)
    return {"shortest_edge": low, "longest_edge": high}


def load_model(model: ModelConfig, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """``AutoModelForImageTextToText`` in ``model.dtype``, 4/8-bit on this process's GPU when
    QLoRA is asked for. Unquantized models load without a device map: the trainer places them
    (one copy per process under ``accelerate launch``, sharded by DeepSpeed or FSDP)."""
    from accelerate import PartialState
    from transformers import AutoModelForImageTextToText
    from trl import get_quantization_config
    from trl.trainer.utils import create_model_from_path

    name = model.model_name_or_path or ""
    where = _local_or_hub(name, what="model")
    quantization = get_quantization_config(model)
    device_map = None if quantization is None else {"": PartialState().local_process_index}
    try:
        return create_model_from_path(
            where,
            architecture=AutoModelForImageTextToText,
            revision=model.model_revision,
            dtype=model.dtype,
            attn_implementation=model.attn_implementation,
            quantization_config=quantization,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:
        raise ConfigError(_load_failure(name, err)) from err


def check_quantization(model: ModelConfig) -> None:
    """QLoRA needs LoRA on top, a CUDA device and bitsandbytes; say which is missing before
    anything loads (bitsandbytes would fail later, deep inside ``from_pretrained``)."""
    if not (model.load_in_4bit or model.load_in_8bit):
        return
    bits = "load_in_4bit" if model.load_in_4bit else "load_in_8bit"
    if not model.use_peft:
        msg = (
            f"{bits} quantizes the frozen base model, which only LoRA adapters can train "
            f"(QLoRA): set use_peft: true as well, or drop {bits} for a full fine-tune"
        )
        raise ConfigError(msg)
    import torch

    if not torch.cuda.is_available():
        msg = (
            f"{bits} (QLoRA) needs a CUDA GPU and bitsandbytes, and no CUDA device is visible; "
            f"set {bits}: false to train LoRA or a full fine-tune without quantization"
        )
        raise ConfigError(msg)
    if importlib.util.find_spec("bitsandbytes") is None:
        msg = f"{bits} (QLoRA) needs bitsandbytes: pip install bitsandbytes"
        raise MissingExtraError(msg)


def vision_tower_name(network: PreTrainedModel) -> str:
    """The qualified name of the model's vision tower (``model.visual`` for Qwen2.5-VL)."""
    tower = network.get_encoder(modality="image")
    if tower is not network and tower is not network.base_model:
        for name, module in network.named_modules():
            if module is tower:
                return name
    msg = (
        f"cannot find the vision tower of {type(network).__name__} (get_encoder('image') "
        f"names none); set freeze_vision: false"
    )
    raise ConfigError(msg)


def freeze_vision_tower(network: PreTrainedModel) -> None:
    """Stop gradients into the vision tower, so the optimizer never holds or changes it."""
    for parameter in network.get_submodule(vision_tower_name(network)).parameters():
        parameter.requires_grad_(False)


def lora_config(
    network: PreTrainedModel, model: ModelConfig, *, freeze_vision: bool
) -> LoraConfig | None:
    """TRL's LoRA options as a ``LoraConfig`` (``trl.get_peft_config``), or None for a full
    fine-tune.

    Without ``lora_target_modules`` every linear layer is adapted (peft knows no default for
    most VLMs); a frozen vision tower is excluded, so its weights and outputs stay the base
    model's.
    """
    from trl import get_peft_config

    peft_config = get_peft_config(model)
    if peft_config is None:
        return None
    exclude = rf"{re.escape(vision_tower_name(network))}(\..*)?" if freeze_vision else None
    return replace(
        peft_config,
        target_modules=model.lora_target_modules or "all-linear",
        exclude_modules=exclude,
    )


def _check_chat_template(processor: ProcessorMixin, training: CotSFTConfig, name: str) -> None:
    """Refuse, with what to do, a model whose chat template cannot mask the assistant turn
    (TRL would raise a ValueError from deep inside the trainer's constructor)."""
    if not training.assistant_only_loss or training.chat_template_path is not None:
        return
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = processor.chat_template
    if not template:
        msg = f"model {name} has no chat template; set chat_template_path to a .jinja file"
        raise ConfigError(msg)
    if has_generation_markers(template):
        return
    try:
        get_training_chat_template(processor)
    except ValueError as err:
        msg = (
            f"the chat template of {name} has no {{% generation %}} markers and TRL has no "
            f"training variant of it, so the assistant turn cannot be masked: set "
            f"chat_template_path to a template with the markers, or assistant_only_loss: false"
        )
        raise ConfigError(msg) from err


def _local_or_hub(name: str, *, what: str) -> str:
    """``name`` as a local path when it exists, as a Hub id when it looks like one; otherwise
    the missing folder it names is an error now rather than a Hub lookup later."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if _HUB_ID.match(name) and not name.startswith("."):
        return name
    hint = "run `cotforge export --out FOLDER` first" if what == "dataset" else "check the path"
    msg = f"{what} folder {path} does not exist; {hint}, or give a Hub id (owner/name)"
    raise ConfigError(msg)


def _load_failure(name: str, err: Exception) -> str:
    reason = _first_line(err)
    if Path(name).expanduser().exists():
        return (
            f"{name} is not a transformers image-text-to-text model folder ({reason}); pass "
            f"the folder that holds config.json, the weights and the processor files"
        )
    return (
        f"cannot load model {name!r} ({reason}); download it while online "
        f"(`hf download {name}`) or pass a local folder"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
