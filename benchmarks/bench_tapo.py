"""Seconds per training step: TAPO against plain TRL GRPO, same model, batch and group size.

Both trainers train the tiny random Qwen2.5-VL (``cotforge.testing.tiny``) on the same ``tapo``
export of a synthetic FGVC-Aircraft (made the real way: ``datasets synth``, ``plan``,
``export``), with the same seed, batch (``--anchors`` anchors x ``--group`` completions), group
size, completion length and DAPO settings (clip 0.2 / 0.28, no reference model). GRPO samples
the whole group on the anchor image; TAPO samples half of it on the positive image and adds the
inter-class KL (``gamma`` 0.01) and the entropy-like terms (0.03), so its only extra model work
is the negative view's forward pass (no gradient, the default ``negative_grad: false``). A row
with ``negative_grad: true`` (a second forward pass with gradient) is shown for information.

The reward is a hash of the completion text, so no group is flat and both trainers run the
same policy-gradient work (the random model never earns the Fine-R1 reward). A step is timed
from ``on_step_begin`` to ``on_step_end`` (sampling, scoring, forward, backward, optimiser);
the first ``--warmup`` steps of each run are left out, runs alternate GRPO / TAPO ``--rounds``
times, and the figure is the median over all timed steps. Torch uses ``--threads`` threads (1
by default: the tiny model's matrices are too small to split, and on a shared machine more
threads make timings noisy rather than faster).

    .venv/bin/python benchmarks/bench_tapo.py [--steps 10] [--rounds 3] [--completion-length 32]

The last line is ``RESULT tapo_step_ratio=<TAPO median / GRPO median> target<=1.6``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_name, _value)

import torch  # noqa: E402 (after the offline switches, which huggingface_hub reads at import)
from datasets import load_dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cotforge.cli import app  # noqa: E402
from cotforge.testing.tiny import build_tiny_qwen2_5_vl  # noqa: E402
from trainers.rewards import completion_text  # noqa: E402
from trainers.tapo import TAPOConfig, TAPOTrainer  # noqa: E402


def text_hash_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Differs between random completions, so every group keeps its policy gradient."""
    return [(sum(map(ord, completion_text(c))) % 97) / 97 for c in completions]


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def export_tapo(base: Path) -> Path:
    """A ``tapo`` export of 6 synthetic aircraft classes (4 seen, 2 anchors each: 8 rows)."""
    runner = CliRunner()
    os.environ["COTFORGE_HOME"] = str(base / "home")
    store = str(base / "store.duckdb")
    root = base / "data" / "fgvc-aircraft-2013b"
    for argv in (
        ["datasets", "synth", "--out", str(base / "data"), "--classes", "6"],
        [
            *("plan", "--dataset", "aircraft", "--root", str(root), "--shots", "2"),
            *("--strategy", "hierarchy", "--allow-fewer", "--store", store),
        ],
        ["export", "--store", store, "--out", str(base / "export"), "--configs", "tapo"],
    ):
        result = runner.invoke(app, argv)
        if result.exit_code != 0:
            raise SystemExit(f"cotforge {argv[0]} failed:\n{result.stdout}{result.stderr}")
    return base / "export"


def run(name: str, model: Path, data: Any, out: Path, options: argparse.Namespace) -> list[float]:
    """Train ``options.steps`` steps and return the timed ones' seconds."""
    group = options.group
    common: dict[str, Any] = {
        "output_dir": str(out / name),
        "per_device_train_batch_size": options.anchors * group,
        "max_completion_length": options.completion_length,
        "max_steps": options.steps,
        "learning_rate": 1e-5,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.01,
        "loss_type": "dapo",
        "epsilon": 0.2,
        "epsilon_high": 0.28,
        "beta": 0.0,
        "temperature": 1.0,
        "top_p": 0.99,
        "bf16": False,
        "activation_checkpointing": False,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "save_strategy": "no",
        "logging_steps": options.steps,
        "report_to": [],
        "seed": 0,
    }
    timer = StepTimer()
    if name == "grpo":
        args = GRPOConfig(num_generations=group, **common)
        trainer: GRPOTrainer = GRPOTrainer(
            str(model),
            reward_funcs=[text_hash_reward],
            args=args,
            train_dataset=data,
            callbacks=[timer],
        )
    else:
        args = TAPOConfig(
            n_anchor=group // 2,
            n_positive=group - group // 2,
            negative_grad=name == "tapo-negative-grad",
            reward_weights=[1.0],
            **common,
        )
        trainer = TAPOTrainer(
            str(model),
            args=args,
            train_dataset=data,
            reward_funcs=[text_hash_reward],
            callbacks=[timer],
        )
    trainer.train()
    return timer.seconds[options.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run not timed")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per trainer")
    parser.add_argument("--anchors", type=int, default=2, help="anchors per step")
    parser.add_argument("--group", type=int, default=4, help="completions per anchor")
    parser.add_argument("--completion-length", type=int, default=32, help="tokens per completion")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    options = parser.parse_args()
    if options.steps <= options.warmup:
        parser.error("--steps must exceed --warmup")
    torch.set_num_threads(options.threads)

    with tempfile.TemporaryDirectory(prefix="bench-tapo-") as folder:
        base = Path(folder)
        model = build_tiny_qwen2_5_vl(base / "tiny-qwen2.5-vl")
        data = load_dataset(str(export_tapo(base)), "tapo", cache_dir=str(base / "hf-cache"))[
            "train"
        ]
        timings: dict[str, list[float]] = {"grpo": [], "tapo": [], "tapo-negative-grad": []}
        for _ in range(options.rounds):
            for name in timings:
                timings[name] += run(name, model, data, base / "runs", options)

    rows = options.anchors * options.group
    print(
        f"\n{options.anchors} anchors x {options.group} completions = {rows} rows per step, "
        f"{options.completion_length} new tokens, {options.threads} thread(s), "
        f"{len(timings['grpo'])} timed steps per trainer"
    )
    print(f"{'trainer':<34} {'median s/step':>14} {'mean':>8} {'min':>8} {'vs GRPO':>8}")
    base_median = statistics.median(timings["grpo"])
    labels = {
        "grpo": "TRL GRPO (DAPO settings)",
        "tapo": "TAPO (default, negative_grad off)",
        "tapo-negative-grad": "TAPO, negative_grad on",
    }
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        print(
            f"{labels[name]:<34} {median:>14.3f} {statistics.mean(seconds):>8.3f} "
            f"{min(seconds):>8.3f} {median / base_median:>8.2f}"
        )
    ratio = statistics.median(timings["tapo"]) / base_median
    print(f"RESULT tapo_step_ratio={ratio:.2f} target<=1.6")


if __name__ == "__main__":
    main()
