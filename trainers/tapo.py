"""TAPO, Fine-R1's stage 2, as a thin subclass of TRL's ``GRPOTrainer``.

Built and tested against **trl 1.16.0** and **transformers 5.24.0**; other versions get a warning,
because the private ``GRPOTrainer`` methods this module overrides change between releases:

- ``_generate_and_score_completions``: gives each row of a group its view (anchor or positive
  image) before TRL generates, then applies dynamic sampling, logs the per-view rewards and
  computes the negative view's log-probabilities;
- ``_generate``: re-samples groups whose rewards are all equal (``max_resample``), and with
  ``condition_on="anchor"`` returns the anchor's prompt tokens and images so that TRL scores
  every completion under the anchor;
- ``_generate_single_turn``: tells vLLM's server mode that prompts repeat in runs of
  ``gcd(n_anchor, n_positive)``, not ``num_generations`` (it deduplicates by that stride);
- ``_calculate_rewards``: keeps the gathered rewards for the steps above;
- ``_get_per_token_logps_and_entropies`` and ``_compute_loss``: the DAPO loss is TRL's, the
  extra terms are added to it using the log-probabilities TRL's forward pass already computed.

It also uses the parent's ``_tokenize_prompts``, ``_metrics``, ``_tokenizer``,
``pad_to_multiple_of``, ``reward_func_names`` and ``reward_weights``, and TRL's helpers
``trl.trainer.utils.pad`` and ``trl.models.utils.disable_gradient_checkpointing``.

What TAPO adds to DAPO (token-level clipped policy gradient, clip 0.2 / 0.28, no reference KL;
TRL's ``loss_type="dapo"``), following ``shared/reference/fine-r1/README.md``:

- **Intra-class augmentation.** A group of ``n_anchor + n_positive`` completions per anchor:
  the first ``n_anchor`` sampled on the anchor image, the rest on its positive (another image of
  the same class). TRL's group-normalised advantages are then computed over the mixed group.
  ``condition_on`` chooses the image the positive completions are scored under: ``own`` (the
  one they were sampled from; the released code) or ``anchor`` (the paper's text).
- **Inter-class augmentation.** ``gamma * KL(pi(o|q,x) || pi(o|q,x_neg))`` is maximised: per
  completion token the k3 estimator ``1/g + log g - 1`` with ``g = pi(o_t|q,x) / pi(o_t|q,x_neg)``
  (clamped like EasyR1's ``low_var_kl``), averaged over completion tokens. ``x`` is the image
  the completion is scored under. With ``negative_grad=False`` the negative view's
  log-probabilities come from the policy before the update, without gradient (the released
  code); with ``True`` they are recomputed in the loss and the gradient flows (the equation).
- **Entropy-like terms** of the released code: ``eta1 * mean(-log pi(o_t|q,x))`` and
  ``eta2 * mean(-log pi(o_t|q,x_neg))`` are added to the loss (minimised). The second has no
  gradient unless ``negative_grad`` is on.
- **Dynamic sampling.** Groups whose rewards are all equal carry no advantage; their tokens are
  removed from the loss (and from DAPO's token count) and counted. The released run judged
  groups on accuracy alone (all 0 or all 1): ``dynamic_sampling_on="accuracy_reward"``. With
  ``max_resample > 0`` the same anchors are sampled again (TRL's sampler, not the trainer,
  decides which rows come next), up to that many times, and a new group whose rewards differ
  replaces the flat one.

Run it with ``python trainers/tapo.py --config FILE.yaml [--option value ...]`` or
``python -m trainers.tapo``; see ``trainers/README.md`` for configs and multi-GPU launches.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cotforge.errors import ConfigError, CotforgeError, MissingExtraError

try:
    import numpy as np
    import torch
    import transformers
    import trl
    import yaml
    from transformers import SchedulerType
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser
    from trl.data_utils import prepare_multimodal_messages
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import pad
except ImportError as err:  # pragma: no cover - depends on the environment
    msg = f"trainers/tapo.py needs {err.name}: pip install 'cotforge[train]'"
    raise MissingExtraError(msg) from err

from trainers.rewards import REWARD_FUNCS, REWARD_WEIGHTS

TESTED_WITH = {"trl": "1.16.0", "transformers": "5.24.0"}
"""The versions whose private methods this module was written against."""
FLAT_SPREAD = 1e-6
"""A group whose rewards span no more than this is flat: all completions scored the same."""
LOG_RATIO_CLAMP = 20.0
"""The log-ratio is clamped to +-20 before ``exp`` (EasyR1's ``low_var_kl``), against overflow."""

Messages = list[dict[str, Any]]


@dataclass
class TAPOConfig(GRPOConfig):
    """:class:`~trl.GRPOConfig` with TAPO's options; defaults are the paper's settings.

    Changed from GRPOConfig: ``num_generations`` is derived (``n_anchor + n_positive``),
    ``per_device_train_batch_size`` 10 (one group), ``epsilon_high`` 0.28, ``top_p`` 0.99,
    ``max_completion_length`` 2048, ``weight_decay`` 0.01, a constant learning rate (1e-6,
    GRPOConfig's default), and ``reward_weights`` [0.9, 0.1] for the default rewards
    (accuracy, format). ``loss_type`` "dapo", ``epsilon`` 0.2 and ``beta`` 0 are
    GRPOConfig's defaults already.
    """

    n_anchor: int = field(
        default=5,
        metadata={"help": "Completions sampled on the anchor image in each group (n1)."},
    )
    n_positive: int = field(
        default=5,
        metadata={
            "help": "Completions sampled on the positive image (another image of the anchor's "
            "class) in the same group (n2); 0 turns intra-class augmentation off."
        },
    )
    condition_on: str = field(
        default="own",
        metadata={
            "help": "Image the positive view's completions are scored under in the loss: 'own' "
            "(the image they were sampled from, as the released code) or 'anchor' (the paper)."
        },
    )
    gamma: float = field(
        default=0.01,
        metadata={
            "help": "Weight of KL(pi(o|q,x) || pi(o|q,x_neg)), maximised (k3 estimator per token, "
            "averaged over completion tokens); 0 turns inter-class augmentation off."
        },
    )
    negative_grad: bool = field(
        default=False,
        metadata={
            "help": "Let the gradient flow through the negative view's log-probabilities (the "
            "paper's equation); False uses the pre-update policy's, without gradient (the code)."
        },
    )
    kl_clamp: float = field(
        default=10.0,
        metadata={"help": "Upper bound of the per-token k3 value (EasyR1's low_var_kl uses 10)."},
    )
    eta1: float = field(
        default=0.03,
        metadata={
            "help": "Weight of mean(-log pi(o_t|q,x)) over completion tokens, added to the loss "
            "(the released code's entropy-like term on the scored view)."
        },
    )
    eta2: float = field(
        default=0.03,
        metadata={
            "help": "Weight of mean(-log pi(o_t|q,x_neg)), added to the loss; without "
            "negative_grad it has no gradient and changes only the loss value, as in the code."
        },
    )
    dynamic_sampling: bool = field(
        default=True,
        metadata={"help": "Drop groups whose rewards are all equal from the loss, and count them."},
    )
    dynamic_sampling_on: str = field(
        default="reward",
        metadata={
            "help": "What must differ inside a group for it to stay: 'reward' (the weighted "
            "total) or one reward function's name, e.g. 'accuracy_reward' as the released code."
        },
    )
    max_resample: int = field(
        default=0,
        metadata={
            "help": "Times a flat group's anchor is sampled again to refill the batch (0: never)."
        },
    )
    num_generations: int | None = field(
        default=None,
        metadata={"help": "Group size: n_anchor + n_positive. Leave unset (derived)."},
    )
    per_device_train_batch_size: int = field(
        default=10,
        metadata={
            "help": "Completions per device per micro-step; the generation batch must hold whole "
            "groups (default: one group of n_anchor + n_positive = 10)."
        },
    )
    epsilon_high: float | None = field(
        default=0.28, metadata={"help": "Upper clipping bound (DAPO's clip-higher)."}
    )
    top_p: float = field(default=0.99, metadata={"help": "Nucleus sampling of rollouts."})
    max_completion_length: int | None = field(
        default=2048, metadata={"help": "Maximum length of a generated response, in tokens."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: SchedulerType | str = field(
        default="constant", metadata={"help": "Learning-rate schedule (the paper: constant)."}
    )
    reward_weights: list[float] | None = field(
        default_factory=lambda: list(REWARD_WEIGHTS),
        metadata={
            "help": "Weights of the reward functions; the defaults weigh accuracy_reward 0.9 and "
            "format_reward 0.1 (the paper's 0.9 * accuracy + 0.1 * format)."
        },
    )

    def __post_init__(self) -> None:
        self._check_tapo_options()
        group = self.n_anchor + self.n_positive
        if self.num_generations is None:
            self.num_generations = group
        elif self.num_generations != group:
            msg = (
                f"num_generations={self.num_generations} but n_anchor + n_positive = {group}; "
                "leave num_generations unset, TAPO derives it"
            )
            raise ConfigError(msg)
        try:
            super().__post_init__()
        except ValueError as err:  # GRPOConfig's checks of batch sizes and group sizes
            raise ConfigError(str(err)) from err

    def _check_tapo_options(self) -> None:
        problems = []
        if self.n_anchor < 1:
            problems.append(f"n_anchor must be at least 1; got {self.n_anchor}")
        if self.n_positive < 0:
            problems.append(f"n_positive must be 0 or more; got {self.n_positive}")
        if self.n_anchor + self.n_positive < 2:
            problems.append("n_anchor + n_positive must be at least 2 (a group needs two)")
        if self.condition_on not in ("own", "anchor"):
            problems.append(f"condition_on must be 'own' or 'anchor'; got {self.condition_on!r}")
        if self.gamma < 0:
            problems.append(f"gamma must be 0 or more (the KL is maximised); got {self.gamma}")
        if self.kl_clamp <= 0:
            problems.append(f"kl_clamp must be positive; got {self.kl_clamp}")
        if self.max_resample < 0:
            problems.append(f"max_resample must be 0 or more; got {self.max_resample}")
        if self.max_resample and not self.dynamic_sampling:
            problems.append("max_resample needs dynamic_sampling (it refills dropped groups)")
        if self.remove_unused_columns:
            problems.append(
                "remove_unused_columns must be false: TAPO and its rewards read the "
                "image_positive, image_negative, answer, aliases and dataset columns"
            )
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def uses_negative_view(self) -> bool:
        """Whether any term needs the completions' log-probabilities under the negative image."""
        return self.gamma != 0 or self.eta2 != 0


class TAPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with Fine-R1's triplet augmentations (see the module docstring).

    Args:
        model: a model id or folder, or a loaded ``PreTrainedModel`` / ``PeftModel``.
        args: the :class:`TAPOConfig`.
        train_dataset: rows with ``prompt`` and ``image``, plus ``image_positive`` when
            ``n_positive > 0`` and ``image_negative`` when ``gamma`` or ``eta2`` is set, and the
            columns the reward functions read: the ``tapo`` config of a ``cotforge export``.
        reward_funcs: TRL reward functions; default :data:`trainers.rewards.REWARD_FUNCS`
            (accuracy, format), weighted by ``args.reward_weights``.
        eval_dataset, processing_class, reward_processing_classes, callbacks, optimizers,
        quantization_config, peft_config: as for :class:`~trl.GRPOTrainer`.

    Reward functions also receive a ``view`` column (``anchor`` or ``positive``): which image
    the completion was sampled on.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "grpo", "tapo", "cotforge"]
    _name = "TAPO"

    def __init__(
        self,
        model: Any,
        *,
        args: TAPOConfig,
        train_dataset: Any = None,
        reward_funcs: Sequence[Callable[..., list[float]] | str] | None = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ) -> None:
        if not isinstance(args, TAPOConfig):
            msg = f"args must be a TAPOConfig, got {type(args).__name__}; use TAPOConfig(...)"
            raise ConfigError(msg)
        _warn_if_untested()
        _check_columns(train_dataset, "train_dataset", args, training=True)
        evals = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
        for data in evals:
            _check_columns(data, "eval_dataset", args, training=False)
        funcs = list(REWARD_FUNCS) if reward_funcs is None else list(reward_funcs)
        if args.reward_weights is not None and len(args.reward_weights) != len(funcs):
            msg = (
                f"reward_weights {args.reward_weights} do not match the {len(funcs)} reward "
                "function(s); give one weight per function (the default [0.9, 0.1] weighs "
                "accuracy_reward and format_reward)"
            )
            raise ConfigError(msg)
        self._view_rows: list[dict[str, Any]] | None = None
        self._last_rewards: torch.Tensor | None = None
        self._captured_logps: list[torch.Tensor] | None = None
        super().__init__(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        if args.dynamic_sampling_on not in ("reward", *self.reward_func_names):
            msg = (
                f"dynamic_sampling_on={args.dynamic_sampling_on!r} is neither 'reward' nor a "
                f"reward function; the reward functions are {', '.join(self.reward_func_names)}"
            )
            raise ConfigError(msg)

    # --- rollouts ------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        training = self.model.training
        rows = self._assign_views(inputs) if training else _anchor_views(inputs)
        self._view_rows, self._last_rewards = rows, None
        try:
            output = super()._generate_and_score_completions(rows)
        finally:
            self._view_rows = None
        if training:
            rewards = self._last_rewards  # TRL's scoring of the completions it kept
            self._log_views(rewards)
            if self.args.dynamic_sampling:
                self._drop_flat_groups(output, rewards)
        if self.args.uses_negative_view:
            negative = [
                prepare_multimodal_messages(row["prompt"], images=[row["image_negative"]])
                for row in rows
            ]
            if self.args.negative_grad:
                output["negative_prompts"] = negative
            else:
                batch_size = (
                    self.args.per_device_train_batch_size
                    if training
                    else self.args.per_device_eval_batch_size
                )
                with (
                    torch.no_grad(),
                    disable_gradient_checkpointing(
                        self.model, self.args.gradient_checkpointing_kwargs
                    ),
                ):
                    output["negative_per_token_logps"] = self._view_logps(
                        self.model,
                        negative,
                        output["completion_ids"],
                        output["completion_mask"],
                        batch_size=batch_size,
                    )
        return output

    def _assign_views(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give each row its view from its place in its group. TRL's sampler repeats every
        anchor ``num_generations`` times in a row and hands each process a contiguous slice of
        the generation batch, so the place is the global row index modulo the group size."""
        offset = self.accelerator.process_index * len(inputs)
        rows = []
        for index, row in enumerate(inputs):
            positive = (offset + index) % self.num_generations >= self.args.n_anchor
            view = {**row, "image_anchor": row["image"], "view": "anchor"}
            if positive:
                view.update(image=row["image_positive"], view="positive")
            rows.append(view)
        return rows

    def _generate(self, prompts: list[Messages]) -> tuple[Any, ...]:
        result = super()._generate(prompts)
        if not self.model.training or self._view_rows is None:
            return result
        if self.args.max_resample:
            result = self._refill_flat_groups(prompts, result)
        if self.args.condition_on == "anchor" and self.args.n_positive:
            result = self._scored_on_anchor(result)
        return result

    def _generate_single_turn(
        self,
        prompt_ids: list[list[int]],
        images: Any,
        multimodal_fields: dict[str, Any],
        num_generations: int,
        has_tool_images: bool = False,
    ) -> tuple[Any, Any]:
        if self.model.training and self.args.n_positive:
            # vLLM's server mode samples every num_generations-th prompt num_generations times;
            # a group is two runs of prompts (anchor, positive), so the stride is their gcd.
            num_generations = math.gcd(self.args.n_anchor, self.args.n_positive)
        return super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations, has_tool_images
        )

    def _calculate_rewards(
        self,
        inputs: list[dict[str, Any]],
        prompts: list[Any],
        completions: list[Any],
        completion_ids_list: list[list[int]],
    ) -> torch.Tensor:
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards
        return rewards

    def _refill_flat_groups(self, prompts: list[Messages], result: tuple[Any, ...]) -> tuple:
        """Sample the whole local batch again up to ``max_resample`` times and take, for each
        flat group, the first new group whose rewards differ.

        Every process generates its whole slice each round, whatever it holds: generation and
        reward gathering are collective, and vLLM's server mode needs equal slices.
        """
        prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest = result
        completion_ids, completions = list(completion_ids), list(completions)
        logprobs = None if logprobs is None else list(logprobs)
        rows = self._view_rows
        local = self._local_rows(len(prompts))
        rewards = self._calculate_rewards(rows, prompts, completions, completion_ids)
        flat = self._flat_groups(rewards)
        refilled = 0
        metrics = self._metrics["train"]
        for _ in range(self.args.max_resample):
            if not flat.any():
                break
            seen = {key: len(values) for key, values in metrics.items()}
            fresh = super()._generate(prompts)
            for key in list(metrics):  # the kept completions' lengths are logged already
                if key in seen:
                    del metrics[key][seen[key] :]
                else:
                    del metrics[key]
            fresh_rewards = self._calculate_rewards(rows, prompts, fresh[3], fresh[1])
            taken = flat & ~self._flat_groups(fresh_rewards)
            replaced = taken.repeat_interleave(self.num_generations)[local]
            for i in replaced.nonzero().flatten().tolist():
                completion_ids[i] = fresh[1][i]
                completions[i] = fresh[3][i]
                if logprobs is not None:
                    logprobs[i] = fresh[4][i]
            refilled += int(taken.sum())
            flat = flat & ~taken
        metrics["tapo/refilled_groups"].append(float(refilled))
        return (prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest)

    def _scored_on_anchor(self, result: tuple[Any, ...]) -> tuple:
        """The anchor's prompt tokens and images in place of the sampled view's: TRL builds the
        loss inputs (pixel values, image tokens) from these, so every completion of the group
        is scored under the anchor image, as the paper's text has it."""
        rows = self._view_rows
        prompts = [
            prepare_multimodal_messages(row["prompt"], images=[row["image_anchor"]]) for row in rows
        ]
        prompt_ids, images, _ = self._tokenize_prompts(prompts)
        _, completion_ids, tool_mask, completions, logprobs, extra, _, tool_images = result
        return (
            prompt_ids,
            completion_ids,
            tool_mask,
            completions,
            logprobs,
            extra,
            images,
            tool_images,
        )

    # --- dynamic sampling and logging ----------------------------------------------------------

    def _local_rows(self, count: int) -> slice:
        start = self.accelerator.process_index * count
        return slice(start, start + count)

    def _flat_groups(self, rewards: torch.Tensor) -> torch.Tensor:
        """One flag per group (over all processes): True when its values are all equal."""
        key = self.args.dynamic_sampling_on
        if key == "reward":
            weights = self.reward_weights.to(rewards.device).unsqueeze(0)
            values = (rewards * weights).nansum(dim=1)
        else:
            values = rewards[:, self.reward_func_names.index(key)]
        grouped = values.view(-1, self.num_generations)
        low = torch.where(grouped.isnan(), math.inf, grouped).amin(dim=1)
        high = torch.where(grouped.isnan(), -math.inf, grouped).amax(dim=1)
        return ~(high - low > FLAT_SPREAD)

    def _drop_flat_groups(self, output: dict[str, Any], rewards: torch.Tensor) -> None:
        """Remove the tokens of flat groups from the loss (the way TRL masks truncated
        completions: through ``completion_mask``) and from DAPO's token count."""
        flat = self._flat_groups(rewards)
        count = output["completion_ids"].size(0)
        keep = (~flat).repeat_interleave(self.num_generations)[self._local_rows(count)]
        mask = output["completion_mask"] * keep.unsqueeze(1).to(output["completion_mask"].dtype)
        output["completion_mask"] = mask
        loss_mask = mask * output["tool_mask"] if "tool_mask" in output else mask
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self._metrics["train"]["tapo/dropped_groups"].append(float(flat.sum()))
        self._metrics["train"]["tapo/dropped_group_frac"].append(flat.float().mean().item())

    def _log_views(self, rewards: torch.Tensor) -> None:
        """Mean reward, and each reward function's mean, per view over the generation batch."""
        slot = torch.arange(rewards.size(0), device=rewards.device) % self.num_generations
        positive = slot >= self.args.n_anchor
        total = (rewards * self.reward_weights.to(rewards.device).unsqueeze(0)).nansum(dim=1)
        metrics = self._metrics["train"]
        for view, rows in (("anchor", ~positive), ("positive", positive)):
            if not rows.any():
                continue
            metrics[f"reward/{view}"].append(torch.nanmean(total[rows]).item())
            for column, name in enumerate(self.reward_func_names):
                metrics[f"rewards/{name}/{view}"].append(
                    torch.nanmean(rewards[rows, column]).item()
                )

    # --- loss ----------------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> tuple:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._captured_logps is not None:
            self._captured_logps.append(result[0])
        return result

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._captured_logps = []
        try:
            loss = super()._compute_loss(model, inputs)
            (logps,) = self._captured_logps  # TRL's one forward pass with gradient
        finally:
            self._captured_logps = None
        return loss + self._tapo_terms(model, inputs, logps)

    def _tapo_terms(self, model: Any, inputs: dict[str, Any], logps: torch.Tensor) -> torch.Tensor:
        """The inter-class KL and entropy-like terms, each a mean over the micro-batch's
        completion tokens (in float32, whatever the model's dtype), scaled for gradient
        accumulation like TRL's entropy bonus."""
        args = self.args
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.float()
        logps = logps.float()
        tokens = mask.sum().clamp(min=1.0)
        terms = logps.new_zeros(())
        if args.eta1:
            terms = terms + args.eta1 * -(logps * mask).sum() / tokens
        if args.uses_negative_view:
            if args.negative_grad:
                negative = self._view_logps(
                    model,
                    inputs["negative_prompts"],
                    inputs["completion_ids"],
                    inputs["completion_mask"],
                )
            else:
                negative = inputs["negative_per_token_logps"]
            negative = negative.float()
            if args.gamma:
                kl = k3_divergence(logps, negative, clamp=args.kl_clamp)
                terms = terms - args.gamma * (kl * mask).sum() / tokens
                self._metrics[mode]["tapo/kl_negative"].append(self._global_mean(kl, mask))
            if args.eta2:
                terms = terms + args.eta2 * -(negative * mask).sum() / tokens
        scale = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        return terms / scale

    def _global_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        local = torch.stack([(values.detach() * mask).sum(), mask.sum()])
        total, count = self.accelerator.reduce(local, reduction="sum")
        return (total / count.clamp(min=1.0)).item()

    # --- another view of the same completions --------------------------------------------------

    def _view_logps(
        self,
        model: Any,
        prompts: list[Messages],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Per-token log-probabilities of the completions after ``prompts`` (their images
        embedded)."""
        prompt_ids, prompt_mask, forward_kwargs, num_images = self._encode_view(prompts)
        for key in ("token_type_ids", "mm_token_type_ids"):  # the completion has no image token
            if key in forward_kwargs:
                types = forward_kwargs[key]
                forward_kwargs[key] = torch.cat([types, types.new_zeros(completion_ids.shape)], 1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
            batch_size=batch_size,
            num_images=num_images,
            **forward_kwargs,
        )
        return logps

    def _encode_view(
        self, prompts: list[Messages]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[int]]:
        """Prompt ids and mask, the model's image inputs, and images per row, from one pass of
        TRL's prompt tokenisation, left-padded the way TRL pads its generation inputs."""
        ids_list, images, fields = self._tokenize_prompts(prompts)
        padding = {"padding_side": "left", "pad_to_multiple_of": self.pad_to_multiple_of}
        ids = [torch.tensor(row) for row in ids_list]
        prompt_ids = pad(ids, padding_value=self._tokenizer.pad_token_id, **padding)
        prompt_mask = pad([torch.ones_like(row) for row in ids], padding_value=0, **padding)
        forward_kwargs: dict[str, Any] = {}
        for key, value in fields.items():
            if isinstance(value, torch.Tensor):  # per image: pixel_values, image_grid_thw, ...
                forward_kwargs[key] = value
            elif value and isinstance(value[0], list):  # per token: mm_token_type_ids, ...
                forward_kwargs[key] = pad([torch.tensor(row) for row in value], **padding)
            else:
                forward_kwargs[key] = torch.tensor(np.array(value))
        # Trainer's own _prepare_inputs (GRPOTrainer's generates): device, and dtype on DeepSpeed.
        moved = super(GRPOTrainer, self)._prepare_inputs(
            {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, **forward_kwargs}
        )
        num_images = [len(row) if row else 0 for row in images]
        prompt_ids, prompt_mask = moved.pop("prompt_ids"), moved.pop("prompt_mask")
        return prompt_ids, prompt_mask, moved, num_images


def k3_divergence(
    logps: torch.Tensor, other_logps: torch.Tensor, *, clamp: float = 10.0
) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(pi || pi_other)`` from samples of ``pi``: with
    ``g = pi / pi_other``, ``1/g + log g - 1`` (never negative, 0 where the two agree).

    >>> kl = k3_divergence(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -3.0]))
    >>> [round(value, 4) for value in kl.tolist()]  # e^-1 + 1 - 1 where log g = 1
    [0.0, 0.3679]
    """
    log_ratio = (other_logps - logps).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # -log g
    return (log_ratio.exp() - log_ratio - 1).clamp(max=clamp)


def _anchor_views(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation rows: every completion on the anchor image, as a plain GRPO evaluation."""
    return [{**row, "image_anchor": row["image"], "view": "anchor"} for row in inputs]


def _check_columns(data: Any, name: str, args: TAPOConfig, *, training: bool) -> None:
    columns = getattr(data, "column_names", None)
    if columns is None:  # no dataset, or a stream that does not know its columns
        return
    needed = ["prompt", "image"]
    if training and args.n_positive:
        needed.append("image_positive")
    if args.uses_negative_view:
        needed.append("image_negative")
    missing = [column for column in needed if column not in columns]
    if missing:
        msg = (
            f"{name} has no {', '.join(missing)} column; TAPO trains on the `tapo` config of a "
            "`cotforge export` folder: load_dataset(FOLDER, 'tapo')"
        )
        raise ConfigError(msg)


def _warn_if_untested() -> None:
    found = {"trl": trl.__version__, "transformers": transformers.__version__}
    if found != TESTED_WITH:
        warnings.warn(
            f"TAPOTrainer overrides private GRPOTrainer methods and was tested with {TESTED_WITH}; "
            f"found {found}. Run tests/test_trainer_tapo.py before trusting a run.",
            UserWarning,
            stacklevel=3,
        )


# --- command line ------------------------------------------------------------------------------


@dataclass
class TAPOScriptArguments:
    """What the command line adds to :class:`TAPOConfig` and TRL's ``ModelConfig``."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `cotforge export` folder, or the Hub id it was pushed to."},
    )
    dataset_config: str = field(default="tapo", metadata={"help": "The export's config to read."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Smallest image area the processor resizes to (the paper: 200704)."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Largest image area the processor resizes to (the paper: 1003520)."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue from the newest checkpoint-* in output_dir (or give "
            "--resume_from_checkpoint PATH)."
        },
    )


def make_parser() -> TrlParser:
    """The parser of ``python trainers/tapo.py``: script, TAPO and model options, ``--config``."""
    return TrlParser((TAPOScriptArguments, TAPOConfig, ModelConfig))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line (and ``--config FILE.yaml``), train, save; a user error prints
    one line and exits non-zero."""
    try:
        try:
            script, config, model_args = make_parser().parse_args_and_config(args=argv)
        except FileNotFoundError as err:
            msg = f"--config {err.filename}: no such file; pass a YAML file of TAPO options"
            raise ConfigError(msg) from err
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: not valid YAML: {err}".splitlines()[0]) from err
        except ValueError as err:  # a YAML that is no mapping, an option a dataclass refuses
            raise ConfigError(str(err)) from err
        train(script, config, model_args)
    except CotforgeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None


def train(script: TAPOScriptArguments, config: TAPOConfig, model_args: ModelConfig) -> TAPOTrainer:
    """Train TAPO on the export named by ``script`` and save the model (or adapter) into
    ``config.output_dir``; returns the trainer."""
    from trl import get_peft_config, get_quantization_config

    if not model_args.model_name_or_path:
        msg = "--model_name_or_path is required: the SFT checkpoint (folder or Hub id) to train"
        raise ConfigError(msg)
    if model_args.use_peft and not model_args.lora_target_modules:
        msg = (
            "--use_peft needs --lora_target_modules (e.g. q_proj v_proj k_proj o_proj): peft "
            "has no default list for Qwen2-VL-family models"
        )
        raise ConfigError(msg)
    resume = _resume_point(script, config)
    dataset = _load_split(script)
    from_model_args = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    config.model_init_kwargs = {
        **{key: value for key, value in from_model_args.items() if value is not None},
        **(config.model_init_kwargs or {}),
    }
    trainer = TAPOTrainer(
        model=model_args.model_name_or_path,
        args=config,
        train_dataset=dataset,
        processing_class=_processor(script, config, model_args),
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(config.output_dir)
    return trainer


def _resume_point(script: TAPOScriptArguments, config: TAPOConfig) -> str | None:
    if config.resume_from_checkpoint:
        if not Path(config.resume_from_checkpoint).is_dir():
            msg = f"--resume_from_checkpoint {config.resume_from_checkpoint}: no such folder"
            raise ConfigError(msg)
        return config.resume_from_checkpoint
    if not script.resume:
        return None
    output = Path(config.output_dir)
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    if last is None:
        msg = (
            f"--resume: no checkpoint-* folder in {output}; train once without --resume, or "
            "pass --resume_from_checkpoint PATH"
        )
        raise ConfigError(msg)
    return last


def _load_split(script: TAPOScriptArguments) -> Any:
    from datasets import load_dataset

    if not script.dataset_name:
        msg = "--dataset_name is required: a `cotforge export` folder or its Hub id"
        raise ConfigError(msg)
    where = f"--dataset_name {script.dataset_name} --dataset_config {script.dataset_config}"
    try:
        splits = load_dataset(script.dataset_name, script.dataset_config)
    except (FileNotFoundError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"{where}: {reason}; point it at a `cotforge export` folder that has this config"
        raise ConfigError(msg) from err
    if script.dataset_train_split not in splits:
        msg = (
            f"{where} has no split {script.dataset_train_split!r}; it has "
            f"{', '.join(splits)} (--dataset_train_split)"
        )
        raise ConfigError(msg)
    return splits[script.dataset_train_split]


def _processor(script: TAPOScriptArguments, config: TAPOConfig, model_args: ModelConfig) -> Any:
    """The model's processor with the image budget of ``--min_pixels``/``--max_pixels``; None
    (TRL loads the default one) when neither is given."""
    pixels = {
        key: value
        for key, value in (("min_pixels", script.min_pixels), ("max_pixels", script.max_pixels))
        if value is not None
    }
    if not pixels:
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        padding_side="left",
        truncation_side="left",
        trust_remote_code=config.trust_remote_code,
        **pixels,
    )


if __name__ == "__main__":
    main()
