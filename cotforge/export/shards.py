"""Parquet shards of bounded size, written row group by row group as the rows arrive.

One :class:`ShardWriter` writes one split of one config into
``<split>-NNNNN-of-NNNNN.parquet`` files. Rows are buffered only until a row group is full (at
most :data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES`), so memory does not grow with the
number of rows. A new shard starts before a row group would take the current one past the size
limit; the shard count is known only at the end, so shards are written under provisional names
and renamed by :meth:`ShardWriter.close`.

The writer settings are those ``datasets`` uses for ``push_to_hub`` (its per-column options:
images stored plain and uncompressed, other columns dictionary-encoded and snappy-compressed;
content-defined chunking, so a re-upload of a mostly unchanged shard moves few bytes; a page
index), and they are fixed, so the same rows give byte-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from datasets import Features

ROW_GROUP_ROWS = 100
"""Rows per row group at most: a reader fetching one row reads its whole group, and 100 rows of
images is the size ``datasets`` long used for image datasets."""
ROW_GROUP_BYTES = 64 * 2**20
"""Bytes per row group at most (estimated before encoding), which bounds the buffer."""
FOOTER_BASE = 8 * 2**10
"""Room kept in each shard for the fixed part of its footer (the schema, twice: as Parquet's
and as Arrow's, and the features)."""
FOOTER_PER_CHUNK = 256
"""Room kept per column chunk (a column in a row group) for its footer metadata and page
index entry; measured at under 200 bytes without statistics of image bytes."""


@dataclass(frozen=True)
class Shard:
    """One finished shard: its path relative to the export folder, rows and bytes."""

    path: str
    rows: int
    file_bytes: int
    arrow_bytes: int


def shard_name(split: str, number: int, total: int) -> str:
    """The ``datasets`` shard naming pattern.

    >>> shard_name("train", 0, 3)
    'train-00000-of-00003.parquet'
    """
    return f"{split}-{number:05d}-of-{total:05d}.parquet"


def row_bytes(value: Any) -> int:
    """An upper bound of the bytes ``value`` takes encoded: its strings' UTF-8 and its bytes,
    plus a few bytes per value for lengths and levels."""
    if isinstance(value, bytes):
        return len(value) + 8
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 8
    if isinstance(value, dict):
        return sum(row_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(row_bytes(item) for item in value) + 8
    return 8


class ShardWriter:
    """Writes one split into ``folder`` as shards of at most ``max_bytes`` each (a single row
    larger than that gets a shard of its own)."""

    def __init__(
        self, folder: Path, *, split: str, features: Features, max_bytes: int, relative_to: Path
    ) -> None:
        from datasets import config as datasets_config
        from datasets.arrow_writer import get_parquet_column_options

        self.folder = folder
        self.split = split
        self.max_bytes = max_bytes
        self.relative_to = relative_to
        self.schema = features.arrow_schema
        columns = get_parquet_column_options(features, self.schema)
        self._options = {
            **columns,
            # Min/max of image bytes are useless and large (kilobytes per column chunk and
            # page, in the footer and the page index): statistics for the other columns only.
            "write_statistics": [
                leaf for leaf, codec in columns["compression"].items() if codec != "none"
            ],
            "use_content_defined_chunking": datasets_config.DEFAULT_CDC_OPTIONS,
            "write_page_index": True,
        }
        self._cdc = json.dumps(datasets_config.DEFAULT_CDC_OPTIONS)
        self._chunks_per_group = len(columns["compression"])
        self._groups = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffered_bytes = 0
        self._file: BinaryIO | None = None
        self._writer: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self._arrow_bytes = 0
        self._file_bytes = 0
        self._groups = 0
        self._finished: list[tuple[Path, int, int]] = []
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def shard_number(self) -> int:
        """The number of the shard the next row goes into."""
        return len(self._finished)

    def add(self, values: dict[str, Any]) -> tuple[int, int]:
        """Buffer one row; returns (shard number, row index within the shard)."""
        size = row_bytes(values)
        if self._shard_rows and self._written() + self._buffered_bytes + size > self.max_bytes:
            self._flush()
            self._finish_shard()
        if self._buffer and (
            len(self._buffer) >= ROW_GROUP_ROWS or self._buffered_bytes + size > ROW_GROUP_BYTES
        ):
            self._flush()
        self._buffer.append(values)
        self._buffered_bytes += size
        self._shard_rows += 1
        return self.shard_number, self._shard_rows - 1

    def close(self) -> list[Shard]:
        """Write what is buffered, close the last shard and give every shard its final name."""
        self._flush()
        if self._shard_rows:
            self._finish_shard()
        total = len(self._finished)
        shards = []
        for number, (provisional, rows, arrow_bytes) in enumerate(self._finished):
            final = provisional.with_name(shard_name(self.split, number, total))
            os.replace(provisional, final)
            shards.append(
                Shard(
                    path=final.relative_to(self.relative_to).as_posix(),
                    rows=rows,
                    file_bytes=final.stat().st_size,
                    arrow_bytes=arrow_bytes,
                )
            )
        return shards

    def abort(self) -> None:
        """Close an open file after a failure (the caller removes the folder)."""
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()

    def _written(self) -> int:
        """Bytes in the current shard's file so far, plus room for its footer with one more
        row group."""
        chunks = (self._groups + 1) * self._chunks_per_group
        return self._file_bytes + FOOTER_BASE + chunks * FOOTER_PER_CHUNK

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self.folder / f"{self.split}-{self.shard_number:05d}.parquet.partial"
            self._file = path.open("wb")
            self._writer = pq.ParquetWriter(self._file, self.schema, **self._options)
            self._writer.add_key_value_metadata({"content_defined_chunking": self._cdc})
        batch = pa.RecordBatch.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_batch(batch, row_group_size=len(self._buffer))
        self._arrow_bytes += batch.nbytes
        self._file_bytes = self._file.tell()
        self._groups += 1
        self._buffer = []
        self._buffered_bytes = 0

    def _finish_shard(self) -> None:
        assert self._writer is not None and self._file is not None
        self._writer.close()
        self._file.close()
        path = Path(self._file.name)
        self._finished.append((path, self._shard_rows, self._arrow_bytes))
        self._writer = self._file = None
        self._shard_rows = 0
        self._arrow_bytes = 0
        self._file_bytes = 0
        self._groups = 0
