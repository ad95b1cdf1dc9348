"""The contrastive baseline: a CLIP or SigLIP model picks the closed-world option whose text
embedding is most similar to the image's.

The paper compares Fine-R1 with CLIP ViT-L and SigLIP-L on the same four options per image;
this scores any such checkpoint (``--model clip:PATH_OR_ID``) on the same rows the generative
models get, so their numbers sit in one table. Each option is written as CLIP's fine-grained
prompt ("a photo of a {name}, a type of {super-category}."), embedded once per run; images go
through the model in batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from cotforge.errors import MissingExtraError, TeacherUnavailableError
from cotforge.eval.prompts import option_prompt
from cotforge.eval.similarity import text_embeddings, unit_rows


class ZeroShotModel:
    """A CLIP/SigLIP checkpoint as a closed-world classifier; loads on :meth:`load`."""

    def __init__(self, path: str, *, device: str | None = None) -> None:
        self.path = path
        self.name = f"clip:{path}"
        self.device = device
        self._model: Any = None
        self._processor: Any = None
        self._texts: dict[str, Any] = {}

    def load(self) -> None:
        """Load the model and processor; a missing extra or model is a user error."""
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModel, AutoProcessor
        except ImportError as err:
            msg = f"--model {self.name} needs pip install 'cotforge[local]' ({err})"
            raise MissingExtraError(msg) from err
        try:
            processor = AutoProcessor.from_pretrained(self.path)
            model = AutoModel.from_pretrained(self.path)
        except (OSError, ValueError) as err:
            raise TeacherUnavailableError(self._load_failure(err)) from err
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            msg = (
                f"eval model {self.name} is a {type(model).__name__}, not a CLIP-like model "
                f"with image and text towers; use local:PATH for a generative model"
            )
            raise TeacherUnavailableError(msg)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model.to(device).eval()
        self._processor = processor

    def _load_failure(self, err: Exception) -> str:
        """Say what to do: a folder that is missing or not a model, or an id not downloaded."""
        path = Path(self.path).expanduser()
        if not path.exists() and self.path.startswith(("/", ".", "~")):
            return f"eval model {self.name}: model folder {path} does not exist"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return (
            f"eval model {self.name}: cannot load a CLIP/SigLIP model ({reason}); pass a folder "
            f"with config.json, weights and processor files, or download the Hub model while "
            f"online (`hf download {self.path}`)"
        )

    def choose(
        self, images: Sequence[Image.Image], options: Sequence[Sequence[str]], super_category: str
    ) -> list[tuple[str, str]]:
        """For each image, the option it matches best and the raw scores (as JSON text, the
        prediction's stored output): ``[(chosen, '{"option": score, ...}'), ...]``."""
        import torch

        self.load()
        model = self._model
        wanted = [
            option_prompt(name, super_category=super_category)
            for names in options
            for name in names
        ]
        self._embed_texts([text for text in dict.fromkeys(wanted) if text not in self._texts])
        pixels = self._processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        )
        with torch.inference_mode():
            features = unit_rows(model.get_image_features(**pixels.to(model.device)))
        chosen = []
        for vector, names in zip(features, options, strict=True):
            texts = torch.stack(
                [self._texts[option_prompt(n, super_category=super_category)] for n in names]
            )
            scores = (texts @ vector).float().cpu().tolist()
            best = max(range(len(names)), key=scores.__getitem__)
            raw = json.dumps(dict(zip(names, (round(s, 6) for s in scores), strict=True)))
            chosen.append((names[best], raw))
        return chosen

    def _embed_texts(self, texts: list[str]) -> None:
        if texts:
            features = text_embeddings(self._model, self._processor, texts)
            self._texts.update(zip(texts, features, strict=True))

    def close(self) -> None:
        """Drop the model (and its accelerator memory)."""
        self._model = self._processor = None
        self._texts.clear()
