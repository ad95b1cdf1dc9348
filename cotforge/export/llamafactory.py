"""The ``sft`` config in LLaMA-Factory's layout, the one Fine-R1's released SFT data uses.

``sft.json`` is a JSON list of ``{"messages": [system, user, assistant], "images": [path]}``
records ("sharegpt" formatting with role/content tags) whose user turn starts with the
``<image>`` placeholder; ``dataset_info.json`` registers it under :data:`DATASET_NAME`; each
image is a file under ``images/`` named by its dataset-relative id, and records refer to it by
that relative path (LLaMA-Factory resolves it against the dataset folder). Records are written
one per line as they arrive; an image used twice is written once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASET_NAME = "cotforge_sft"
"""The name ``--dataset`` takes in LLaMA-Factory with ``--dataset_dir`` at the export folder."""
DATA_FILE = "sft.json"
IMAGE_FOLDER = "images"
IMAGE_TOKEN = "<image>"


def dataset_info() -> dict[str, Any]:
    """The ``dataset_info.json`` entry describing :data:`DATA_FILE`."""
    return {
        DATASET_NAME: {
            "file_name": DATA_FILE,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def _text(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["content"] if part["type"] == "text")


class LlamaFactoryWriter:
    """Writes ``sft`` rows (structured messages, encoded images) into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._images: set[str] = set()
        self._rows = 0
        self._file = (folder / DATA_FILE).open("w", encoding="utf-8")
        self._file.write("[")

    def add(self, values: dict[str, Any]) -> int:
        """Write one row; returns its index in the list of :data:`DATA_FILE`."""
        names = []
        for image in values["images"]:
            name = f"{IMAGE_FOLDER}/{image['path']}"
            if name not in self._images:
                path = self.folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image["bytes"])
                self._images.add(name)
            names.append(name)
        messages = []
        for message in values["messages"]:
            text = _text(message)
            if message["role"] == "user":
                images = sum(1 for part in message["content"] if part["type"] == "image")
                text = IMAGE_TOKEN * images + text
            messages.append({"role": message["role"], "content": text})
        record = {
            "messages": messages,
            "images": names,
            **{k: v for k, v in values.items() if k not in ("messages", "images")},
        }
        self._file.write(
            ("\n" if self._rows == 0 else ",\n") + json.dumps(record, ensure_ascii=False)
        )
        self._rows += 1
        return self._rows - 1

    def close(self) -> int:
        """Finish the JSON list and write ``dataset_info.json``; returns the rows written."""
        self._file.write("\n]\n")
        self._file.close()
        info = json.dumps(dataset_info(), indent=2, sort_keys=True) + "\n"
        (self.folder / "dataset_info.json").write_text(info, encoding="utf-8")
        return self._rows

    def abort(self) -> None:
        """Close the file after a failure (the caller removes the folder)."""
        self._file.close()

    @property
    def file_bytes(self) -> int:
        """Bytes of the JSON file and the images, once closed."""
        data = (self.folder / DATA_FILE).stat().st_size
        return data + sum((self.folder / name).stat().st_size for name in self._images)
