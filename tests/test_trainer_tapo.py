"""TAPO on the tiny random Qwen2.5-VL, offline on CPU, with a real ``cotforge export`` folder.

The export is made the real way (``datasets synth``, ``plan``, ``export --configs tapo``) and
loaded with ``load_dataset(folder, "tapo")``. Which image the model saw is read from the
``pixel_values`` it was given, per row, against the image processor's encoding of each image of
the triplet. The random model never writes a correct answer, so tests that need groups whose
rewards differ use a reward function of the completion text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.data.annotations import load_annotations
from cotforge.errors import ConfigError
from trainers.rewards import completion_text
from trainers.tapo import TAPOConfig, TAPOTrainer, k3_divergence, main

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "trainers" / "configs" / "tapo_tiny.yaml"
GROUP = 4  # n_anchor 2 + n_positive 2
SETTINGS: dict[str, Any] = {
    "n_anchor": 2,
    "n_positive": 2,
    "per_device_train_batch_size": 2 * GROUP,
    "max_completion_length": 8,
    "max_steps": 1,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "bf16": False,
    "activation_checkpointing": False,
    "use_cpu": True,
    "dataloader_num_workers": 0,
    "report_to": [],
    "seed": 0,
}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: the tiny model's matrices are too small to split, and on a shared
    two-core machine several threads per process make every step ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tapo`` export of a synthetic FGVC-Aircraft: 4 seen classes x 2 anchors = 8 rows."""
    base = tmp_path_factory.mktemp("tapo-export")
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COTFORGE_HOME", str(base / "home"))
        for name in ("COTFORGE_STORE", "COTFORGE_CONFIG"):
            patch.delenv(name, raising=False)
        store = str(base / "store.duckdb")
        root = base / "data" / "fgvc-aircraft-2013b"
        for argv in (
            ["datasets", "synth", "--out", str(base / "data"), "--classes", "6"],
            [
                *("plan", "--dataset", "aircraft", "--root", str(root), "--shots", "2"),
                *("--strategy", "hierarchy", "--allow-fewer", "--store", store),
            ],
            ["export", "--store", store, "--out", str(base / "out"), "--configs", "tapo"],
        ):
            result = runner.invoke(app, argv)
            assert result.exit_code == 0, result.stdout + result.stderr
    return base / "out"


@pytest.fixture(scope="module")
def rows(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from datasets import load_dataset

    cache = tmp_path_factory.mktemp("hf-cache")
    return load_dataset(str(exported), "tapo", cache_dir=str(cache))["train"]


def varied_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """A reward that differs between random completions, so no group is flat."""
    return [(sum(map(ord, completion_text(c))) % 97) / 97 for c in completions]


def make_trainer(
    model: Path, rows: Any, tmp_path: Path, *, reward_funcs: list[Any] | None = None, **options: Any
) -> TAPOTrainer:
    funcs = [varied_reward] if reward_funcs is None else reward_funcs
    settings = {**SETTINGS, "reward_weights": [1.0] * len(funcs), **options}
    args = TAPOConfig(output_dir=str(tmp_path / "run"), **settings)
    return TAPOTrainer(str(model), args=args, train_dataset=rows, reward_funcs=funcs)


def generation_batch(rows: Any, anchors: int = 2, group: int = GROUP) -> list[dict[str, Any]]:
    """What TRL's sampler hands the trainer: each anchor row repeated ``group`` times in a row
    (the first ``anchors`` rows of different classes)."""
    picked: list[dict[str, Any]] = []
    for row in rows:
        if all(row["label"] != other["label"] for other in picked):
            picked.append(row)
    return [row for row in picked[:anchors] for _ in range(group)]


class Seen:
    """Records what the vision tower is given: since transformers 5 encodes images before
    ``generate`` and the log-prob passes alike, one call per batch of images shown."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(
            {
                "pixel_values": args[0] if args else kwargs["hidden_states"],
                "image_grid_thw": kwargs["grid_thw"],
                "grad": torch.is_grad_enabled(),
            }
        )


@pytest.fixture
def seen_by() -> Iterator[Callable[[TAPOTrainer], Seen]]:
    handles = []

    def attach(trainer: TAPOTrainer) -> Seen:
        seen = Seen()
        tower = trainer.model.model.visual
        handles.append(tower.register_forward_pre_hook(seen.hook, with_kwargs=True))
        return seen

    yield attach
    for handle in handles:
        handle.remove()


def per_image(pixel_values: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(pixel_values, grid.prod(-1).tolist()))


def encoded(trainer: TAPOTrainer, image: Any) -> torch.Tensor:
    return trainer.processing_class.image_processor(images=[image], return_tensors="pt")[
        "pixel_values"
    ]


def which_image(trainer: TAPOTrainer, pixels: torch.Tensor, row: dict[str, Any]) -> str:
    """The column of ``row`` whose image encodes to exactly ``pixels``."""
    names = [
        column
        for column in ("image", "image_positive", "image_negative")
        if torch.equal(encoded(trainer, row[column]), pixels)
    ]
    assert len(names) == 1, names
    return names[0]


# --- views -------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition_on", ["own", "anchor"])
def test_a_group_samples_n_anchor_then_n_positive_and_scores_as_configured(
    tiny_qwen: Path,
    rows: Any,
    tmp_path: Path,
    seen_by: Callable[[TAPOTrainer], Seen],
    condition_on: str,
) -> None:
    trainer = make_trainer(tiny_qwen, rows, tmp_path, condition_on=condition_on)
    seen = seen_by(trainer)
    trainer.model.train()
    batch = generation_batch(rows)
    output = trainer._generate_and_score_completions(batch)

    # Two image passes: sampling, then the negative view (no old log-probs are needed when
    # every generation is used for one optimiser step).
    sampling, negative = seen.calls
    views = ["image", "image", "image_positive", "image_positive"] * 2
    sampled = per_image(sampling["pixel_values"], sampling["image_grid_thw"])
    assert [which_image(trainer, p, r) for p, r in zip(sampled, batch, strict=True)] == views

    # The loss inputs: the sampled image ('own') or the anchor for every row ('anchor').
    scored = per_image(output["pixel_values"], output["image_grid_thw"])
    expected = views if condition_on == "own" else ["image"] * len(batch)
    assert [which_image(trainer, p, r) for p, r in zip(scored, batch, strict=True)] == expected
    assert output["num_images"] == [1] * len(batch)

    # The negative view: one forward without gradient over the same completions.
    assert not negative["grad"]
    shown = per_image(negative["pixel_values"], negative["image_grid_thw"])
    assert {which_image(trainer, p, r) for p, r in zip(shown, batch, strict=True)} == {
        "image_negative"
    }
    assert output["negative_per_token_logps"].shape == output["completion_ids"].shape


def test_advantages_are_normalised_over_the_mixed_group(
    tiny_qwen: Path, rows: Any, tmp_path: Path
) -> None:
    def positive_view(completions: list[Any], view: list[str], **kwargs: Any) -> list[float]:
        return [1.0 if v == "positive" else 0.0 for v in view]

    trainer = make_trainer(tiny_qwen, rows, tmp_path, reward_funcs=[positive_view])
    trainer.model.train()
    output = trainer._generate_and_score_completions(generation_batch(rows))

    # Rewards 0, 0, 1, 1 in each group: (r - 0.5) / (std + 1e-4). Normalising per view
    # instead would give all zeros (each view alone is flat).
    std = torch.tensor([0.0, 0.0, 1.0, 1.0]).std()
    one = 0.5 / (std + 1e-4)
    expected = torch.tensor([-one, -one, one, one] * 2)
    torch.testing.assert_close(output["advantages"], expected)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/positive_view/anchor"] == [0.0]
    assert metrics["rewards/positive_view/positive"] == [1.0]
    assert metrics["tapo/dropped_groups"] == [0.0]


# --- the loss ----------------------------------------------------------------------------------


class Gradients(TrainerCallback):
    """Copies every gradient right before the optimiser step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        self.grads = {
            name: p.grad.detach().clone()
            for name, p in model.named_parameters()
            if p.grad is not None
        }


@pytest.mark.parametrize(
    ("options", "same_positive"),
    [
        ({"n_anchor": 4, "n_positive": 0}, False),
        ({"n_anchor": 2, "n_positive": 2, "condition_on": "anchor"}, True),
    ],
    ids=["no-positive-view", "positive-view-of-the-same-image"],
)
def test_without_the_tapo_terms_the_step_is_trls_dapo_step(
    tiny_qwen: Path, rows: Any, tmp_path: Path, options: dict[str, Any], same_positive: bool
) -> None:
    """gamma = eta1 = eta2 = 0: the same seed gives the same completions, loss and gradients as
    GRPOTrainer with DAPO settings (a positive view that shows the anchor's own image changes
    nothing either)."""
    data = rows.select(range(2))
    if same_positive:
        data = data.map(lambda row: {"image_positive": row["image"]}, features=data.features)
    common = {k: v for k, v in SETTINGS.items() if k not in ("n_anchor", "n_positive")}
    common.update(epsilon=0.2, epsilon_high=0.28, beta=0.0, loss_type="dapo", top_p=0.99)
    common.update(lr_scheduler_type="constant", weight_decay=0.01, max_completion_length=8)
    runs = {}
    for name, args, trainer_class in (
        ("grpo", GRPOConfig(str(tmp_path / "grpo"), num_generations=GROUP, **common), GRPOTrainer),
        (
            "tapo",
            TAPOConfig(
                str(tmp_path / "tapo"),
                gamma=0.0,
                eta1=0.0,
                eta2=0.0,
                reward_weights=[1.0],
                **{**common, **options},
            ),
            TAPOTrainer,
        ),
    ):
        grads = Gradients()
        trainer = trainer_class(
            str(tiny_qwen),
            args=args,
            train_dataset=data,
            reward_funcs=[varied_reward],
            callbacks=[grads],
        )
        trainer.train()
        runs[name] = (trainer.state.log_history[0], grads.grads)

    (grpo_log, grpo_grads), (tapo_log, tapo_grads) = runs["grpo"], runs["tapo"]
    assert tapo_log["tapo/dropped_groups"] == 0
    assert tapo_log["reward"] == grpo_log["reward"]  # the same completions
    assert tapo_log["loss"] == pytest.approx(grpo_log["loss"], rel=1e-5, abs=1e-7)
    assert grpo_grads.keys() == tapo_grads.keys()
    assert grpo_grads
    for name, grad in grpo_grads.items():
        torch.testing.assert_close(tapo_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def loss_and_grads(
    trainer: TAPOTrainer, rows: Any, seen: Seen
) -> tuple[float, dict[str, torch.Tensor], list[bool]]:
    """One micro-batch by hand, as the training loop runs it; also which of the image passes
    inside ``compute_loss`` built a graph."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop
    torch.manual_seed(0)
    inputs = trainer._prepare_inputs(generation_batch(rows))
    seen.calls.clear()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, [call["grad"] for call in seen.calls]


def test_negative_grad_decides_whether_the_negative_view_gets_a_gradient(
    tiny_qwen: Path, rows: Any, tmp_path: Path, seen_by: Callable[[TAPOTrainer], Seen]
) -> None:
    results = {}
    for name, options in (
        ("no-kl", {"gamma": 0.0}),
        ("off", {"gamma": 0.5, "negative_grad": False}),
        ("on", {"gamma": 0.5, "negative_grad": True}),
    ):
        trainer = make_trainer(tiny_qwen, rows, tmp_path / name, eta1=0.0, eta2=0.0, **options)
        results[name] = loss_and_grads(trainer, rows, seen_by(trainer))

    (_, no_kl, _), (loss_off, off, passes_off), (loss_on, on, passes_on) = results.values()
    # off: the negative log-probs were computed at generation time, without gradient; the
    # loss runs one pass with gradient (the scored view). on: two.
    assert passes_off == [True]
    assert passes_on == [True, True]
    # Same values either way (same policy, same completions); different gradients.
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    changed = [name for name in off if not torch.allclose(on[name], off[name], atol=1e-9)]
    assert changed
    # With negative_grad off the KL still moves the policy through the scored view.
    assert any(not torch.allclose(off[name], no_kl[name], atol=1e-9) for name in off)


def test_entropy_like_terms_add_the_mean_negative_log_likelihood(
    tiny_qwen: Path, rows: Any, tmp_path: Path, seen_by: Callable[[TAPOTrainer], Seen]
) -> None:
    """eta1 * mean(-log pi(o|q,x)) and eta2 * mean(-log pi(o|q,x_neg)) join the loss, as in
    the released code; without negative_grad the eta2 term has no gradient."""
    runs = {}
    for name, options in (
        ("base", {}),
        ("eta1", {"eta1": 0.5}),
        ("eta2", {"eta2": 0.5}),
    ):
        settings = {"gamma": 0.0, "eta1": 0.0, "eta2": 0.0, **options}
        trainer = make_trainer(tiny_qwen, rows, tmp_path / name, **settings)
        scored: list[torch.Tensor] = []
        forward = trainer._get_per_token_logps_and_entropies

        def recording(
            *args: Any, _forward: Any = forward, _scored: list[Any] = scored, **kwargs: Any
        ) -> Any:
            result = _forward(*args, **kwargs)
            _scored.append(result[0].detach())
            return result

        trainer._get_per_token_logps_and_entropies = recording  # type: ignore[method-assign]
        loss, grads, _ = loss_and_grads(trainer, rows, seen_by(trainer))
        runs[name] = (loss, grads, scored[-1], trainer)

    # The same seed samples the same completions in every run: the base run's scored-view
    # log-probs (TRL's forward pass) are those the eta1 term averages.
    base_loss, base_grads, logps, _ = runs["base"]
    for name in ("eta1", "eta2"):
        loss, grads, _, trainer = runs[name]
        inputs = trainer._buffered_inputs[0]
        mask = inputs["completion_mask"].float()
        view = logps if name == "eta1" else inputs["negative_per_token_logps"]
        nll = -(view * mask).sum() / mask.sum()
        assert loss - base_loss == pytest.approx(0.5 * nll.item(), rel=1e-4)
        moved = any(not torch.allclose(grads[n], base_grads[n], atol=1e-9) for n in grads)
        assert moved == (name == "eta1")


def test_k3_divergence_is_zero_only_where_the_views_agree_and_is_clamped() -> None:
    logps = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    other = torch.tensor([-1.0, -2.0, -0.5, -40.0])
    kl = k3_divergence(logps, other, clamp=10.0)
    assert kl[0] == 0
    assert (kl[1:] > 0).all()
    # 1/g + log g - 1 with log g = logps - other.
    log_g = logps[1:3] - other[1:3]
    torch.testing.assert_close(kl[1:3], torch.exp(-log_g) + log_g - 1)
    assert kl[3] == pytest.approx(10.0)


# --- dynamic sampling --------------------------------------------------------------------------


def test_flat_groups_leave_the_loss_and_are_counted(
    tiny_qwen: Path, rows: Any, tmp_path: Path
) -> None:
    batch = generation_batch(rows)
    first = batch[0]["label"]

    def flat_for_first(completions: list[Any], label: list[str], **kwargs: Any) -> list[float]:
        varied = varied_reward(completions)
        return [0.5 if lab == first else v for lab, v in zip(label, varied, strict=True)]

    trainer = make_trainer(tiny_qwen, rows, tmp_path, reward_funcs=[flat_for_first])
    trainer.model.train()
    output = trainer._generate_and_score_completions(batch)

    mask = output["completion_mask"]
    assert mask[:GROUP].sum() == 0  # the first anchor's group: all rewards 0.5
    assert (mask[GROUP:] == 1).all()
    assert output["num_items_in_batch"] == mask.sum()
    metrics = trainer._metrics["train"]
    assert metrics["tapo/dropped_groups"] == [1.0]
    assert metrics["tapo/dropped_group_frac"] == [0.5]


@pytest.mark.parametrize(("judged_on", "dropped"), [("reward", 0.0), ("never_right", 2.0)])
def test_dynamic_sampling_can_judge_groups_on_one_reward_function(
    tiny_qwen: Path, rows: Any, tmp_path: Path, judged_on: str, dropped: float
) -> None:
    """The released run dropped groups whose accuracy was all 0 or all 1, whatever the format
    reward did: the weighted total differs inside each group here, the accuracy never."""

    def never_right(completions: list[Any], **kwargs: Any) -> list[float]:
        return [0.0] * len(completions)

    trainer = make_trainer(
        tiny_qwen,
        rows,
        tmp_path,
        reward_funcs=[never_right, varied_reward],
        dynamic_sampling_on=judged_on,
    )
    trainer.model.train()
    trainer._generate_and_score_completions(generation_batch(rows))
    assert trainer._metrics["train"]["tapo/dropped_groups"] == [dropped]


def test_fine_r1_rewards_on_random_text_drop_every_group(
    tiny_qwen: Path, rows: Any, tmp_path: Path
) -> None:
    args = TAPOConfig(output_dir=str(tmp_path / "run"), **SETTINGS)
    trainer = TAPOTrainer(str(tiny_qwen), args=args, train_dataset=rows)
    assert trainer.reward_func_names == ["accuracy_reward", "format_reward"]
    assert trainer.reward_weights.tolist() == pytest.approx([0.9, 0.1])
    trainer.train()
    (log, *_) = trainer.state.log_history
    assert log["tapo/dropped_group_frac"] == 1.0
    assert log["loss"] == 0.0
    for key in (
        "reward",
        "rewards/accuracy_reward/mean",
        "rewards/format_reward/mean",
        "rewards/accuracy_reward/anchor",
        "rewards/accuracy_reward/positive",
        "reward/anchor",
        "reward/positive",
        "tapo/kl_negative",
        "completions/mean_length",
    ):
        assert key in log, key


def test_resampling_refills_flat_groups(tiny_qwen: Path, rows: Any, tmp_path: Path) -> None:
    calls = []

    def flat_at_first(completions: list[Any], **kwargs: Any) -> list[float]:
        calls.append(len(completions))
        return [0.5] * len(completions) if len(calls) == 1 else varied_reward(completions)

    trainer = make_trainer(tiny_qwen, rows, tmp_path, reward_funcs=[flat_at_first], max_resample=2)
    trainer.model.train()
    output = trainer._generate_and_score_completions(generation_batch(rows))

    metrics = trainer._metrics["train"]
    assert metrics["tapo/refilled_groups"] == [2.0]
    assert metrics["tapo/dropped_groups"] == [0.0]
    assert (output["completion_mask"] == 1).all()
    # First sample, one re-sample, then TRL's own scoring of the kept completions.
    assert calls == [2 * GROUP] * 3
    assert len(metrics["completions/mean_length"]) == 1  # the discarded round is not logged


# --- rewards through the trainer ---------------------------------------------------------------


def test_the_trainers_rewards_refuse_multi_answers(
    tiny_qwen: Path, rows: Any, tmp_path: Path
) -> None:
    args = TAPOConfig(output_dir=str(tmp_path / "run"), **SETTINGS)
    trainer = TAPOTrainer(str(tiny_qwen), args=args, train_dataset=rows)
    row = rows[0]
    other = load_annotations("aircraft").by_label[row["negative_label"]].name
    answers = [row["answer"], f"{row['answer']} or {other}", "", f"{other}"]
    completions = [
        [{"role": "assistant", "content": f"<think>wings</think>\n<answer>{a}</answer>"}]
        for a in answers
    ]
    inputs = [dict(row) for _ in answers]
    rewards = trainer._calculate_rewards(inputs, [row["prompt"]] * 4, completions, [[1]] * 4)
    assert rewards[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]  # accuracy
    assert rewards[:, 1].tolist() == [1.0, 1.0, 1.0, 1.0]  # format


# --- checkpoints and the command line ----------------------------------------------------------


def test_resume_from_a_checkpoint_continues_the_step_count(
    tiny_qwen: Path, rows: Any, tmp_path: Path
) -> None:
    first = make_trainer(
        tiny_qwen, rows, tmp_path, max_steps=2, save_strategy="steps", save_steps=1
    )
    first.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2

    resumed = make_trainer(tiny_qwen, rows, tmp_path, max_steps=3)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 3
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3]


def cli(exported: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(TINY_CONFIG),
        "--dataset_name",
        str(exported),
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(out),
        "--max_completion_length",
        "8",
        *extra,
    ]


def test_command_line_trains_saves_and_resumes(
    tiny_qwen: Path, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out = tmp_path / "run"
    main(cli(exported, tiny_qwen, out, "--max_steps", "2", "--save_steps", "1"))
    assert (out / "checkpoint-2").is_dir()
    assert (out / "model.safetensors").is_file()

    main(cli(exported, tiny_qwen, out, "--max_steps", "3", "--resume"))
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset_name", "no/such/folder"], "--dataset_name no/such/folder"),
        (["--resume"], "--resume: no checkpoint-* folder"),
        (["--num_generations", "3"], "num_generations=3 but n_anchor + n_positive = 4"),
        (["--condition_on", "positive"], "condition_on must be 'own' or 'anchor'"),
        (["--use_peft"], "--use_peft needs --lora_target_modules"),
    ],
)
def test_command_line_errors_are_one_line(
    tiny_qwen: Path,
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(cli(exported, tiny_qwen, tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    assert message in err[-1]


@pytest.mark.slow
def test_script_runs_with_lora(tiny_qwen: Path, exported: Path, tmp_path: Path) -> None:
    """``python trainers/tapo.py``, as a user runs it, with a LoRA adapter."""
    out = tmp_path / "lora"
    argv = cli(exported, tiny_qwen, out, "--max_steps", "1", "--save_strategy", "no")
    argv += ["--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "trainers" / "tapo.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "adapter_model.safetensors").is_file()


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_anchor": 0}, "n_anchor must be at least 1"),
        ({"n_anchor": 1, "n_positive": 0}, "at least 2"),
        ({"max_resample": 1, "dynamic_sampling": False}, "max_resample needs dynamic_sampling"),
        ({"remove_unused_columns": True}, "remove_unused_columns must be false"),
        ({"gamma": -0.1}, "gamma must be 0 or more"),
        ({"per_device_train_batch_size": 6}, "divisible by num_generations"),
    ],
)
def test_config_refuses_bad_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TAPOConfig(output_dir=str(tmp_path), **{**SETTINGS, **options})


def test_config_defaults_are_the_papers(tmp_path: Path) -> None:
    args = TAPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (args.n_anchor, args.n_positive, args.num_generations) == (5, 5, 10)
    assert (args.loss_type, args.epsilon, args.epsilon_high, args.beta) == ("dapo", 0.2, 0.28, 0.0)
    assert (args.gamma, args.eta1, args.eta2) == (0.01, 0.03, 0.03)
    assert (args.condition_on, args.negative_grad) == ("own", False)
    assert (args.temperature, args.top_p, args.learning_rate) == (1.0, 0.99, 1e-6)
    assert args.reward_weights == [0.9, 0.1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "image_positive"}, "no image_positive column"),
        ({"drop": "image_negative"}, "no image_negative column"),
        ({"dynamic_sampling_on": "accuracy"}, "neither 'reward' nor a reward function"),
        ({"reward_weights": [0.9, 0.1]}, "give one weight per function"),
    ],
)
def test_trainer_refuses_data_and_options_that_do_not_fit(
    tiny_qwen: Path, rows: Any, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    change = dict(change)
    data = rows.remove_columns(change.pop("drop")) if "drop" in change else rows
    with pytest.raises(ConfigError, match=message):
        make_trainer(tiny_qwen, data, tmp_path, **change)
