"""The store of record: one DuckDB file holding every record, teacher call and decision.

Every stage of the flow reads from and writes to this file, so a run can be resumed (a rerun finds
its finished requests), audited (each number traces back to the calls and verdicts behind it) and
exported. This is the only module that writes SQL; the rest of cotforge hands it lists of dicts or
polars frames and gets polars frames back.

Writes go through DuckDB's Arrow path (``INSERT ... SELECT ... FROM <registered frame>``), one
statement per batch, because row-by-row ``executemany`` is over ten times slower. Each write method
is one transaction, committed through DuckDB's write-ahead log, so a process killed at any point
leaves the file as it was after the last finished call (tests/test_store.py kills a writer to
check). The file is attached with storage settings tuned for multi-kB texts (see below).

Ids are references, not enforced foreign keys: DuckDB refuses to update a row that a foreign key
points at, and the upserts below need to.

All timestamps are naive UTC (the connection runs with ``TimeZone = 'UTC'``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
import pyarrow as pa

from cotforge.errors import StoreError

# ----------------------------------------------------------------------------------------------
# Schema. A migration is (version, statements), applied in one transaction together with its
# schema_version row. Never edit a shipped migration: append a new one, so old files upgrade.
# ----------------------------------------------------------------------------------------------

_SCHEMA_V1 = [
    """CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        config JSON NOT NULL,
        versions JSON NOT NULL,
        started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        ended_at TIMESTAMP,
        status VARCHAR NOT NULL
    )""",
    # One row per image a plan looked at; key is the path relative to the dataset root.
    """CREATE TABLE images (
        image_id VARCHAR PRIMARY KEY,
        dataset VARCHAR NOT NULL,
        split VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        class_index INTEGER NOT NULL,
        label VARCHAR NOT NULL,
        class_name VARCHAR NOT NULL
    )""",
    # The planned k-shot anchors; sample_id is the anchor's image_id.
    """CREATE TABLE samples (
        sample_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        class_index INTEGER NOT NULL,
        label VARCHAR NOT NULL,
        class_name VARCHAR NOT NULL,
        class_split VARCHAR NOT NULL,
        shot INTEGER NOT NULL,
        seed INTEGER NOT NULL
    )""",
    """CREATE TABLE triplets (
        anchor_id VARCHAR PRIMARY KEY,
        positive_id VARCHAR NOT NULL,
        negative_id VARCHAR NOT NULL,
        negative_class_index INTEGER NOT NULL,
        negative_label VARCHAR NOT NULL,
        strategy VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL
    )""",
    """CREATE TABLE skipped (
        image_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (image_id, run_id)
    )""",
    # sample_id may be NULL for calls that are about a class rather than an image (concepts).
    """CREATE TABLE requests (
        request_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        sample_id VARCHAR,
        purpose VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_hash VARCHAR NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        params JSON,
        status VARCHAR NOT NULL,
        response_text VARCHAR,
        error VARCHAR,
        latency_s DOUBLE,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost_usd DOUBLE,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        finished_at TIMESTAMP
    )""",
    # request_id is NULL for a human-edited or imported version (parent_id points at what it
    # edits); the parsed stages are NULL when the text did not parse (verify records why).
    # raw_text is NULL when the text is the producing request's response_text: each text is
    # stored once (readers coalesce), which halves the bytes a generation run writes. The
    # training target is not stored: cotforge.rationale renders it from the stages on export.
    """CREATE TABLE rationales (
        rationale_id VARCHAR PRIMARY KEY,
        request_id VARCHAR,
        sample_id VARCHAR NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        parent_id VARCHAR,
        raw_text VARCHAR,
        analysis VARCHAR,
        candidates VARCHAR[],
        comparison VARCHAR,
        prediction VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE verdicts (
        rationale_id VARCHAR NOT NULL,
        check_name VARCHAR NOT NULL,
        passed BOOLEAN NOT NULL,
        required BOOLEAN NOT NULL DEFAULT true,
        reason VARCHAR,
        run_id VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (rationale_id, check_name)
    )""",
    """CREATE TABLE duplicates (
        rationale_id VARCHAR PRIMARY KEY,
        cluster_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        similarity DOUBLE,
        kept BOOLEAN NOT NULL,
        run_id VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE reviews (
        rationale_id VARCHAR NOT NULL,
        reviewer VARCHAR NOT NULL,
        decision VARCHAR NOT NULL,
        problems VARCHAR[],
        edited_text VARCHAR,
        notes VARCHAR,
        submitted_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (rationale_id, reviewer)
    )""",
    # export_id is the export run; shard is the shard's name or number as the exporter writes it.
    # rationale_id is NULL for rows without a rationale (the eval config).
    """CREATE TABLE exports (
        export_id VARCHAR NOT NULL,
        config VARCHAR NOT NULL,
        split VARCHAR NOT NULL,
        shard VARCHAR NOT NULL,
        row_index INTEGER NOT NULL,
        rationale_id VARCHAR,
        sample_id VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (export_id, config, split, shard, row_index)
    )""",
]

_SCHEMA_V2 = [
    # The run that wrote a rationale (generate, import, review); generated ones inherit their
    # request's run, so reports scope any kind of run with one column.
    "ALTER TABLE rationales ADD COLUMN run_id VARCHAR",
    """UPDATE rationales SET run_id = q.run_id FROM requests q
        WHERE q.request_id = rationales.request_id""",
    # Serialised cotforge.minhash.MinHashIndex per (scope, parameters): dedup compares new
    # rationales against stored signatures instead of recomputing them all.
    """CREATE TABLE dedup_index (
        name VARCHAR PRIMARY KEY,
        params JSON NOT NULL,
        data BLOB NOT NULL,
        documents INTEGER NOT NULL,
        updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
]

_SCHEMA_V3 = [
    # Each retried failure of a request ("HTTP 429, Retry-After 2s"), so retries stay visible
    # after the request succeeded, and why the teacher stopped (a "length" cut is worth seeing).
    "ALTER TABLE requests ADD COLUMN retry_log VARCHAR[]",
    "ALTER TABLE requests ADD COLUMN finish_reason VARCHAR",
]

_SCHEMA_V4 = [
    # Which rationale went to which Argilla dataset ("workspace/name"), with a hash of what was
    # sent: a second push sends only what changed, and a push the server dropped resumes after
    # the last batch it confirmed.
    """CREATE TABLE review_pushes (
        rationale_id VARCHAR NOT NULL,
        dataset_name VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        pushed_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (rationale_id, dataset_name)
    )""",
]

_SCHEMA_V5 = [
    # One scored answer of an evaluated model (cotforge.eval): which question it answered
    # (image, mode, option order, trial), what it said and how it scored. raw_output is NULL
    # when the eval request holds the text (request_id); a zero-shot CLIP prediction has no
    # request and keeps its option scores here. Open-world greedy trials share one request.
    """CREATE TABLE predictions (
        prediction_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        request_id VARCHAR,
        model VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        image_id VARCHAR NOT NULL,
        class_split VARCHAR NOT NULL,
        mode VARCHAR NOT NULL,
        rows_source VARCHAR NOT NULL,
        option_order VARCHAR,
        trial INTEGER NOT NULL,
        prompt_style VARCHAR NOT NULL,
        prompt_hash VARCHAR NOT NULL,
        prompt VARCHAR NOT NULL,
        options VARCHAR[],
        ground_truth VARCHAR NOT NULL,
        raw_output VARCHAR,
        parsed_answer VARCHAR,
        correct BOOLEAN NOT NULL,
        text_inclusion BOOLEAN NOT NULL,
        ss_rel DOUBLE,
        text_encoder VARCHAR,
        named VARCHAR[],
        reason VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
]

_SCHEMA_V6 = [
    # The dedup index one row per document (its signature is 512 bytes), so a rerun appends the
    # new ones. The whole index as one BLOB needed about 8 times its size in DuckDB's memory and
    # failed from 60 MB (about 100k rationales) under the store's 256 MiB; the BLOBs of older
    # stores are dropped, and the next dedup rebuilds the index from the rationales.
    "DELETE FROM dedup_index",
    "ALTER TABLE dedup_index DROP COLUMN data",
    """CREATE TABLE dedup_signatures (
        name VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        rationale_id VARCHAR NOT NULL,
        exact_key UBIGINT NOT NULL,
        group_key UBIGINT NOT NULL,
        in_lsh BOOLEAN NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (name, position)
    )""",
]

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, _SCHEMA_V1),
    (2, _SCHEMA_V2),
    (3, _SCHEMA_V3),
    (4, _SCHEMA_V4),
    (5, _SCHEMA_V5),
    (6, _SCHEMA_V6),
]
"""Ordered (version, statements); opening a store applies those above its version."""

RUN_KINDS = ("plan", "generate", "import", "verify", "dedup", "review", "export", "eval")
RUN_STATUSES = ("running", "ok", "failed", "interrupted")
REQUEST_PURPOSES = ("questions", "concepts", "rationale", "judge", "eval")
REQUEST_STATUSES = ("pending", "ok", "error")
DUPLICATE_KINDS = ("exact", "near", "embedding")

# Allowed values live here rather than in CHECK constraints, so adding one needs no migration.
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "runs": {"kind": RUN_KINDS, "status": RUN_STATUSES},
    "samples": {"class_split": ("seen", "unseen")},
    "requests": {"purpose": REQUEST_PURPOSES, "status": REQUEST_STATUSES},
    "duplicates": {"kind": DUPLICATE_KINDS},
    "predictions": {"class_split": ("seen", "unseen"), "mode": ("closed", "open")},
}

# A key that names a credential, anywhere in a JSON value; "max_tokens" does not match.
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password)$", re.IGNORECASE)
_LOCK_PID = re.compile(r"\(PID (\d+)\)")

_JSON = json.JSONEncoder(sort_keys=True, default=str)  # one encoder: json.dumps builds one a call

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}

# Storage tuning for tables of multi-kB texts appended in small batches, measured with
# benchmarks/bench_store.py (100k requests + rationales, ~1 GB of text):
# - A checkpoint rewrites the last, partly filled row group. With DuckDB's default (122,880 rows)
#   and 16 MiB WAL threshold, appending 100k rationales rewrote ever larger groups: 40 s, growing
#   quadratically. Small row groups bound that rewrite; a 128 MiB threshold checkpoints about
#   once per 13k rows and bounds what a crash leaves in the WAL to replay.
# - DuckDB's automatic choice for long text (FSST) cost half the write time and barely
#   compressed natural text; zstd writes faster and makes the file half as big.
_ROW_GROUP_SIZE = 4096
_CHECKPOINT_THRESHOLD = "128MiB"
_COMPRESSION = "zstd"
_MEMORY_LIMIT = "256MiB"
"""DuckDB's own buffers (DuckDB defaults to 80% of RAM); a full read of a 100k-rationale store
then peaks under 1 GiB with the polars frame, and larger joins spill to the temp directory."""

Rows = Sequence[Mapping[str, Any]] | pl.DataFrame


@dataclass(frozen=True)
class _Column:
    type: str
    required: bool  # NOT NULL without a default: every inserted row must carry it


def utcnow() -> datetime:
    """Now in UTC without a zone, as the store's TIMESTAMP columns hold times."""
    return datetime.now(UTC).replace(tzinfo=None)


def _secret_keys(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of non-empty string values whose key names a credential."""
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            path = f"{prefix}{key}"
            if _SECRET_KEY.search(str(key)) and isinstance(item, str) and item:
                found.append(path)
            found.extend(_secret_keys(item, f"{path}."))
        return found
    if isinstance(value, list | tuple):
        return [p for item in value for p in _secret_keys(item, prefix)]
    return []


def _json_values(values: list[Any], *, table: str, column: str) -> list[str | None]:
    """Encode a JSON column, refusing credentials: the store never keeps a secret.

    Each distinct encoding is checked once, since a batch usually repeats the same params.
    """
    checked: set[str] = set()
    encoded: list[str | None] = []
    for value in values:
        if value is None or isinstance(value, str):
            encoded.append(value)
            continue
        text = _JSON.encode(value)
        if text not in checked:
            secrets = _secret_keys(value)
            if secrets:
                msg = (
                    f"{table}.{column} holds {', '.join(secrets)}, which looks like a secret; the "
                    f"store never keeps credentials: drop it (or pass it through the environment)"
                )
                raise ValueError(msg)
            checked.add(text)
        encoded.append(text)
    return encoded


def _arrow_type(sql_type: str) -> pa.DataType | None:
    """The Arrow type a column's Python values are built as; None lets Arrow infer it."""
    if sql_type.endswith("[]"):
        item = _arrow_type(sql_type[:-2])
        return pa.list_(item) if item is not None else None
    return _ARROW_TYPES.get(sql_type)


class Store:
    """One open cotforge store; use :meth:`open` (also a context manager)."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, *, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._con = con
        self._depth = 0
        self._columns = self._read_columns()

    # ------------------------------------------------------------------------------------------
    # Opening, migrating, closing
    # ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False) -> Store:
        """Open (creating and migrating when writable) the store at ``path``.

        Raises :class:`StoreError` with what to do when the file is missing (read-only), not
        writable, not a DuckDB database, locked by another process, or from a newer cotforge.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            msg = f"{path} is a directory; pass --store PATH to a file inside it"
            raise StoreError(msg)
        if read_only and not path.exists():
            msg = f"{path} does not exist; pass --store PATH to an existing cotforge store"
            raise StoreError(msg)
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                msg = f"{path} is not writable; pass --store PATH to a writable location"
                raise StoreError(msg) from err
        # An in-memory host connection ATTACHes the file: only ATTACH takes a row group size.
        con = duckdb.connect()
        quoted = str(path).replace("'", "''")
        # TYPE DUCKDB: otherwise ATTACH guesses the format from the extension (.csv, .sqlite).
        options = "TYPE DUCKDB, " + (
            "READ_ONLY" if read_only else f"ROW_GROUP_SIZE {_ROW_GROUP_SIZE}"
        )
        try:
            con.execute(f"ATTACH '{quoted}' AS store ({options})")
        except duckdb.Error as err:
            con.close()
            raise _open_error(path, err, read_only=read_only) from err
        try:
            con.execute("USE store")
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET checkpoint_threshold = '{_CHECKPOINT_THRESHOLD}'")
            con.execute(f"SET memory_limit = '{_MEMORY_LIMIT}'")
            con.execute(f"SET temp_directory = '{quoted}.tmp'")
            con.execute(f"SET force_compression = '{_COMPRESSION}'")
            _migrate(con, path, read_only=read_only)
        except BaseException:
            con.close()
            raise
        return cls(path, con, read_only=read_only)

    def close(self) -> None:
        """Close the connection; the file is consistent whether or not this is called."""
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_columns(self) -> dict[str, dict[str, _Column]]:
        rows = self._con.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_catalog = 'store' AND table_schema = 'main' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        columns: dict[str, dict[str, _Column]] = {}
        for table, column, type_, nullable, default in rows:
            required = nullable == "NO" and default is None
            columns.setdefault(table, {})[column] = _Column(type_, required)
        return columns

    # ------------------------------------------------------------------------------------------
    # Transactions and the one frame-insert helper every writer uses
    # ------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Make every write inside the block one all-or-nothing transaction (nesting joins it)."""
        if self.read_only:
            msg = f"{self.path} is open read-only; open it without --read-only to write to it"
            raise StoreError(msg)
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._con.begin()
        self._depth = 1
        try:
            yield self
        except BaseException:
            with suppress(duckdb.TransactionException):  # DuckDB may have ended it already
                self._con.rollback()
            raise
        else:
            self._con.commit()
        finally:
            self._depth = 0

    def _frame(self, table: str, rows: Rows) -> pl.DataFrame:
        """Turn ``rows`` into a frame of ``table``'s columns, validated before any SQL runs.

        Lists of dicts are built column by column through Arrow with the table's types, which is
        several times faster than polars' row-wise constructor for list columns.
        """
        columns = self._columns[table]
        json_columns = {name for name, col in columns.items() if col.type == "JSON"}
        if isinstance(rows, pl.DataFrame):
            frame = rows.with_columns(
                pl.Series(name, _json_values(rows[name].to_list(), table=table, column=name))
                for name in json_columns
                if isinstance(rows.schema.get(name), pl.Struct)
            )
        else:
            arrays = {}
            names = list(rows[0]) if rows else []
            names += sorted(set().union(*rows).difference(names))
            for name in names:
                values = [row.get(name) for row in rows]
                if name in json_columns:
                    values = _json_values(values, table=table, column=name)
                type_ = _arrow_type(columns[name].type) if name in columns else None
                try:
                    arrays[name] = pa.array(values, type=type_)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
                    msg = f"{table}.{name} has a value of the wrong type: {err}"
                    raise ValueError(msg) from err
            frame = pl.from_arrow(pa.table(arrays)) if arrays else pl.DataFrame()
        unknown = [name for name in frame.columns if name not in columns]
        if unknown:
            msg = (
                f"{table} has no column {', '.join(map(repr, unknown))}; "
                f"its columns are {', '.join(columns)}"
            )
            raise ValueError(msg)
        missing = [n for n, col in columns.items() if col.required and n not in frame.columns]
        if missing and frame.height:
            msg = f"rows for {table} lack required column(s) {', '.join(missing)}"
            raise ValueError(msg)
        for name, allowed in _CHOICES.get(table, {}).items():
            if name in frame.columns and frame.schema[name] != pl.Null:
                bad = set(frame[name].drop_nulls().unique().to_list()) - set(allowed)
                if bad:
                    msg = (
                        f"{table}.{name} must be one of {', '.join(allowed)}; "
                        f"got {', '.join(map(repr, sorted(bad)))}"
                    )
                    raise ValueError(msg)
        return frame

    def _insert(
        self,
        table: str,
        rows: Rows,
        *,
        key: tuple[str, ...],
        on_conflict: Literal["ignore", "update"],
        keep: tuple[str, ...] = (),
        update_where: str | None = None,
    ) -> int:
        """Write ``rows`` to ``table`` in one transaction; returns how many rows it changed.

        Rows whose key is new are inserted. For a key already present, ``ignore`` keeps the
        stored row and ``update`` overwrites the given columns except ``keep`` (e.g. created_at),
        only where ``update_where`` holds. Within one batch the last row of a key wins. Finding
        the present keys first and inserting the rest plainly took ~2 s less per 100k requests
        and rationales than ``INSERT ... ON CONFLICT``, which checks the index row by row.
        """
        frame = self._frame(table, rows)
        if frame.height == 0:
            return 0
        if frame.select(key).is_duplicated().any():
            frame = frame.unique(subset=list(key), keep="last", maintain_order=True)
        on = ", ".join(key)
        updates = [c for c in frame.columns if c not in key and c not in keep]
        changed = 0
        with self.transaction():
            try:
                self._con.register("_cotforge_frame", frame)
                present = self._con.sql(
                    f"SELECT {on} FROM {table} SEMI JOIN _cotforge_frame USING ({on})"
                ).pl()
                if present.height and on_conflict == "update" and updates:
                    assignments = ", ".join(f"{c} = f.{c}" for c in updates)
                    matches = " AND ".join(f"{table}.{c} = f.{c}" for c in key)
                    guard = f" AND {update_where}" if update_where else ""
                    changed += self._con.execute(
                        f"UPDATE {table} SET {assignments} FROM _cotforge_frame f "
                        f"WHERE {matches}{guard}"
                    ).fetchall()[0][0]
                if present.height:
                    self._con.unregister("_cotforge_frame")
                    present = present.cast({c: frame.schema[c] for c in key}, strict=False)
                    frame = frame.join(present, on=list(key), how="anti")
                    self._con.register("_cotforge_frame", frame)
                if frame.height:
                    names = ", ".join(frame.columns)
                    changed += self._con.execute(
                        f"INSERT INTO {table} ({names}) SELECT {names} FROM _cotforge_frame"
                    ).fetchall()[0][0]
            except (duckdb.ConstraintException, duckdb.ConversionException) as err:
                msg = f"rows for {table} do not fit its schema: {str(err).splitlines()[0]}"
                raise ValueError(msg) from err
            finally:
                with suppress(duckdb.TransactionException):  # aborted: the rollback drops it
                    self._con.unregister("_cotforge_frame")
        return changed

    # ------------------------------------------------------------------------------------------
    # Writers: one per table operation, each one transaction
    # ------------------------------------------------------------------------------------------

    def start_run(self, kind: str, config: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
        """Record a run as ``running`` and return its id (``<kind>-<UTC time>-<random>``)."""
        if kind not in RUN_KINDS:
            msg = f"run kind must be one of {', '.join(RUN_KINDS)}; got {kind!r}"
            raise ValueError(msg)
        started_at = utcnow()
        run_id = f"{kind}-{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        row = {
            "run_id": run_id,
            "kind": kind,
            "config": dict(config),
            "versions": dict(versions),
            "started_at": started_at,
            "status": "running",
        }
        self._insert("runs", [row], key=("run_id",), on_conflict="ignore")
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark a run ended with ``status`` (ok, failed or interrupted)."""
        ended = RUN_STATUSES[1:]
        if status not in ended:
            msg = f"a finished run's status must be one of {', '.join(ended)}; got {status!r}"
            raise ValueError(msg)
        with self.transaction():
            found = self._con.execute(
                "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ? RETURNING run_id",
                [status, utcnow(), run_id],
            ).fetchall()
        if not found:
            msg = f"{self.path} has no run {run_id!r}; pass an id that start_run returned"
            raise ValueError(msg)

    @contextmanager
    def finishing(self, run_id: str) -> Iterator[None]:
        """End ``run_id`` when the block ends: ``ok``, ``interrupted`` on Ctrl-C, ``failed`` on
        any other exception (re-raised), so no run is left ``running`` by a crash."""
        try:
            yield
        except KeyboardInterrupt:
            self.finish_run(run_id, "interrupted")
            raise
        except BaseException:
            self.finish_run(run_id, "failed")
            raise
        self.finish_run(run_id, "ok")

    def add_images(self, rows: Rows) -> int:
        """Add images; an image already present keeps its row (same id, same file)."""
        return self._insert("images", rows, key=("image_id",), on_conflict="ignore")

    def add_samples(self, rows: Rows) -> int:
        """Add planned anchors; an anchor already planned keeps its first plan's row.

        Keeping the first row lets a replan of the same plan succeed without rewriting the
        history that rationales were generated against.
        """
        return self._insert("samples", rows, key=("sample_id",), on_conflict="ignore")

    def add_triplets(self, rows: Rows) -> int:
        """Add (anchor, positive, negative) triplets; an anchor's first triplet is kept.

        A rationale generated against a triplet stays consistent with it, so a replan never swaps
        the negative under existing rationales.
        """
        return self._insert("triplets", rows, key=("anchor_id",), on_conflict="ignore")

    def add_skipped(self, rows: Rows) -> int:
        """Record images a run could not use and why; once per (image, run)."""
        return self._insert("skipped", rows, key=("image_id", "run_id"), on_conflict="ignore")

    def replace_plan(
        self,
        dataset: str,
        *,
        images: Rows,
        samples: Rows,
        triplets: Rows,
        skipped: Rows = (),
    ) -> None:
        """Make ``samples`` and ``triplets`` the dataset's whole plan, in one transaction.

        A new plan (other shots or seed) must not mix with the old one's anchors, so the
        dataset's samples and their triplets are replaced; images and skipped images are facts
        about files and are only added. Teacher calls made for old anchors stay in the store.
        """
        with self.transaction():
            self._con.execute(
                "DELETE FROM triplets WHERE anchor_id IN "
                "(SELECT sample_id FROM samples WHERE dataset = ?)",
                [dataset],
            )
            self._con.execute("DELETE FROM samples WHERE dataset = ?", [dataset])
            self.add_images(images)
            self.add_samples(samples)
            self.add_triplets(triplets)
            self.add_skipped(skipped)

    def upsert_requests(self, rows: Rows) -> int:
        """Insert requests or update them by request_id; a request already ``ok`` is left as is.

        A finished call is a fact: a rerun re-upserting its plan as ``pending`` must not lose it.
        ``finished_at`` is filled with the current time for ok/error rows that lack one.
        """
        frame = self._frame("requests", rows)
        if frame.height and "status" in frame.columns:
            done = pl.col("status") != "pending"
            stamp = pl.lit(utcnow(), dtype=pl.Datetime("us"))
            finished = pl.col("finished_at") if "finished_at" in frame.columns else pl.lit(None)
            frame = frame.with_columns(
                finished_at=pl.when(done).then(pl.coalesce(finished, stamp)).otherwise(finished)
            )
        return self._insert(
            "requests",
            frame,
            key=("request_id",),
            on_conflict="update",
            keep=("created_at",),
            update_where="requests.status <> 'ok'",
        )

    def add_rationales(self, rows: Rows) -> int:
        """Add rationales; a rationale id already present keeps its row (edits are new versions).

        A rationale without a request (an edit, an import) must carry its own ``raw_text``.
        """
        frame = self._frame("rationales", rows)
        if frame.height:
            request = frame.get_column("request_id", default=pl.Series([None] * frame.height))
            text = frame.get_column("raw_text", default=pl.Series([None] * frame.height))
            textless = frame.filter(request.is_null() & text.is_null())
            if textless.height:
                msg = (
                    f"rationale {textless['rationale_id'][0]!r} has neither a request_id nor a "
                    f"raw_text; a rationale not produced by a request must carry its text"
                )
                raise ValueError(msg)
        return self._insert("rationales", frame, key=("rationale_id",), on_conflict="ignore")

    def add_request_results(self, requests: Rows, rationales: Rows) -> tuple[int, int]:
        """Record finished requests and the rationales parsed from them in ONE transaction.

        So a crash never leaves an ``ok`` request without its rationales (a rerun would skip it
        and the rationale would be lost). Every rationale must name a request in ``requests``;
        rationales without a ``run_id`` take their request's.
        """
        request_frame = self._frame("requests", requests)
        rationale_frame = self._frame("rationales", rationales)
        if request_frame.height and "pending" in request_frame["status"].to_list():
            msg = "add_request_results records finished calls; use upsert_requests for pending ones"
            raise ValueError(msg)
        if rationale_frame.height:
            given = set(request_frame["request_id"]) if request_frame.height else set()
            named = rationale_frame.get_column("request_id", default=pl.Series([None]))
            orphans = set(named) - given
            if orphans:
                msg = (
                    f"{len(orphans)} rationale(s) name requests not in this call "
                    f"(e.g. {sorted(map(str, orphans))[0]!r}); pass each rationale with its request"
                )
                raise ValueError(msg)
        if rationale_frame.height and "run_id" not in rationale_frame.columns:
            runs = request_frame.select("request_id", "run_id")
            rationale_frame = rationale_frame.join(runs, on="request_id", how="left")
        with self.transaction():
            n_requests = self.upsert_requests(request_frame)
            n_rationales = self.add_rationales(rationale_frame)
        return n_requests, n_rationales

    def upsert_verdicts(self, rows: Rows) -> int:
        """Record check results; a re-verify replaces the verdict of the same (rationale, check)."""
        return self._insert(
            "verdicts", rows, key=("rationale_id", "check_name"), on_conflict="update"
        )

    def upsert_duplicates(self, rows: Rows) -> int:
        """Record dedup clusters; a re-dedup replaces a rationale's previous decision."""
        return self._insert("duplicates", rows, key=("rationale_id",), on_conflict="update")

    def upsert_reviews(self, rows: Rows) -> int:
        """Record human reviews; a reviewer's newer decision on a rationale replaces the older."""
        return self._insert("reviews", rows, key=("rationale_id", "reviewer"), on_conflict="update")

    def record_review_pushes(self, rows: Rows) -> int:
        """Record rationales an Argilla dataset confirmed; a re-push replaces the hash."""
        return self._insert(
            "review_pushes", rows, key=("rationale_id", "dataset_name"), on_conflict="update"
        )

    def forget_review_pushes(self, dataset_name: str, rationale_ids: Sequence[str]) -> int:
        """Forget pushes of records no longer in the dataset (deleted in the UI), so the next
        push sends them again; their reviews stay."""
        if not rationale_ids:
            return 0
        ids = pl.DataFrame({"rationale_id": list(rationale_ids)}, schema={"rationale_id": pl.Utf8})
        with self.transaction(), self._registered("_cotforge_forget", ids):
            return self._con.execute(
                "DELETE FROM review_pushes WHERE dataset_name = ? AND rationale_id IN "
                "(SELECT rationale_id FROM _cotforge_forget)",
                [dataset_name],
            ).fetchall()[0][0]

    def add_exports(self, rows: Rows) -> int:
        """Record which rationale went into which shard row; an existing row is kept."""
        return self._insert(
            "exports",
            rows,
            key=("export_id", "config", "split", "shard", "row_index"),
            on_conflict="ignore",
        )

    def add_eval_results(self, requests: Rows, predictions: Rows) -> tuple[int, int]:
        """Record finished eval calls and the predictions scored from them in ONE transaction,
        so a kill never leaves an answered request without its predictions or the reverse.
        A prediction already stored keeps its row (the same id means the same question asked
        of the same model, scored the same way)."""
        with self.transaction():
            n_requests = self.upsert_requests(requests) if len(requests) else 0
            n_predictions = self._insert(
                "predictions", predictions, key=("prediction_id",), on_conflict="ignore"
            )
        return n_requests, n_predictions

    # ------------------------------------------------------------------------------------------
    # Readers
    # ------------------------------------------------------------------------------------------

    def _where(
        self, table: str, where: Mapping[str, Any] | None, alias: str = ""
    ) -> tuple[str, list]:
        """SQL for equality filters: a scalar (=), None (IS NULL) or a list/tuple/set (IN)."""
        if not where:
            return "", []
        clauses, params = [], []
        for name, value in where.items():
            if name not in self._columns[table]:
                msg = (
                    f"{table} has no column {name!r} to filter on; "
                    f"its columns are {', '.join(self._columns[table])}"
                )
                raise ValueError(msg)
            column = f"{alias}{name}"
            if value is None:
                clauses.append(f"{column} IS NULL")
            elif isinstance(value, list | tuple | set | frozenset):
                values = list(value)
                if not values:
                    clauses.append("false")
                else:
                    clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                    params.extend(values)
            else:
                clauses.append(f"{column} = ?")
                params.append(value)
        return " WHERE " + " AND ".join(clauses), params

    @contextmanager
    def _registered(self, name: str, data: pl.DataFrame | pa.Table) -> Iterator[None]:
        """``data`` as the view ``name`` of the connection while the block runs (queries join
        it like a table); unregistered afterwards whatever happens."""
        self._con.register(name, data)
        try:
            yield
        finally:
            self._con.unregister(name)

    def _sorted(
        self, sql: str, *, by: Sequence[str], params: Any = None, drop: Sequence[str] = ()
    ) -> pl.DataFrame:
        """The rows of ``sql`` sorted by its columns ``by`` (ascending, NULLs last, as DuckDB
        sorts), then without the columns ``drop``.

        For results that carry texts: DuckDB's ORDER BY holds every row it sorts within its
        memory limit and failed on 100k rationales of 3.5k characters, while an unsorted result
        streams out, and polars sorts the frame the caller holds anyway in milliseconds.
        """
        frame = self._con.sql(sql, params=params).pl()
        return frame.sort(list(by), nulls_last=True).drop(list(drop))

    def table(self, name: str, *, where: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """All rows of one table (JSON columns as strings), optionally filtered by equality.

        ``where={"status": ["ok", "error"], "model": "qwen"}`` keeps the finished calls of qwen.
        """
        if name not in self._columns:
            msg = f"{self.path} has no table {name!r}; its tables are {', '.join(self._columns)}"
            raise ValueError(msg)
        clause, params = self._where(name, where)
        return self._con.sql(f"SELECT * FROM {name}{clause}", params=params).pl()

    def finished_request_ids(
        self,
        *,
        run_id: str | None = None,
        model: str | None = None,
        purpose: str | None = None,
    ) -> set[str]:
        """Ids of requests already answered (status ``ok``), so a rerun sends only the rest.

        A set rather than a frame because callers test membership; errored requests are not
        finished, a rerun retries them.
        """
        filters = {"run_id": run_id, "model": model, "purpose": purpose}
        where = {"status": "ok", **{k: v for k, v in filters.items() if v is not None}}
        clause, params = self._where("requests", where)
        rows = self._con.execute(f"SELECT request_id FROM requests{clause}", params).fetchall()
        return {row[0] for row in rows}

    def answered(self, request_ids: Sequence[str]) -> dict[str, str | None]:
        """The response texts of those of ``request_ids`` that are answered (status ``ok``).

        What a rerun needs to pick up where it stopped: the answers it already paid for, by id,
        without reading the rest of the store.
        """
        if not request_ids:
            return {}
        ids = pl.DataFrame({"request_id": list(request_ids)})
        with self._registered("_cotforge_ids", ids.to_arrow()):
            rows = self._con.execute(
                "SELECT q.request_id, q.response_text FROM requests q "
                "JOIN _cotforge_ids USING (request_id) WHERE q.status = 'ok'"
            ).fetchall()
        return dict(rows)

    def predictions(self, prediction_ids: Sequence[str]) -> pl.DataFrame:
        """The stored predictions among ``prediction_ids``, ``raw_output`` filled from the
        request when the prediction does not hold it, in prediction id order: an evaluation
        reads back exactly its own questions, whichever run answered them."""
        ids = pl.DataFrame(
            {"prediction_id": list(prediction_ids)}, schema={"prediction_id": pl.String}
        )
        with self._registered("_cotforge_ids", ids.to_arrow()):
            return self._con.sql(
                "SELECT p.* REPLACE (coalesce(p.raw_output, q.response_text) AS raw_output) "
                "FROM predictions p JOIN _cotforge_ids USING (prediction_id) "
                "LEFT JOIN requests q USING (request_id) ORDER BY p.prediction_id"
            ).pl()

    def planned_samples(self, dataset: str) -> pl.DataFrame:
        """The dataset's planned anchors with their image's split and key, and the negative
        class of their triplet (NULL when they have none), in sample id order."""
        return self._con.sql(
            "SELECT s.sample_id, s.dataset, s.class_index, s.label, s.class_name, s.class_split, "
            "s.shot, i.split, i.key, t.negative_class_index FROM samples s "
            "JOIN images i ON i.image_id = s.sample_id "
            "LEFT JOIN triplets t ON t.anchor_id = s.sample_id "
            "WHERE s.dataset = $dataset ORDER BY s.sample_id",
            params={"dataset": dataset},
        ).pl()

    def latest_plan(self, dataset: str) -> dict[str, Any] | None:
        """The options of the dataset's most recent finished plan, or None when it has none."""
        rows = self._con.execute(
            "SELECT config FROM runs WHERE kind = 'plan' AND status = 'ok' "
            "AND json_extract_string(config, '$.dataset') = ? "
            "ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [dataset],
        ).fetchall()
        return json.loads(rows[0][0]) if rows else None

    def accepted_samples(self, *, model: str, required: Sequence[str]) -> set[str]:
        """Samples that already have a rationale from ``model`` passing every ``required``
        check, so a rerun of generation leaves them alone whatever else changed."""
        if not required:
            msg = "required must name at least one check"
            raise ValueError(msg)
        rows = self._con.execute(
            f"""SELECT DISTINCT r.sample_id FROM rationales r
            JOIN requests q USING (request_id)
            JOIN verdicts v USING (rationale_id)
            WHERE q.model = ? AND q.purpose = 'rationale'
                AND v.check_name IN ({", ".join("?" * len(required))})
            GROUP BY r.sample_id, r.rationale_id
            HAVING bool_and(v.passed) AND count(DISTINCT v.check_name) = ?""",
            [model, *required, len(set(required))],
        ).fetchall()
        return {row[0] for row in rows}

    def rationales_to_judge(self, *, required: Sequence[str]) -> pl.DataFrame:
        """Rationales without a judge verdict whose every other ``required`` check passed (the
        judge costs a teacher call; a rationale failing elsewhere is rejected anyway), with
        their comparison and image, in rationale id order."""
        others = [name for name in required if name != "judge"]
        if others:
            names = ", ".join("?" * len(others))
            passing = f"""AND r.rationale_id IN (
                SELECT rationale_id FROM verdicts WHERE check_name IN ({names})
                GROUP BY rationale_id
                HAVING bool_and(passed) AND count(DISTINCT check_name) = ?)"""
            params: list[Any] = [*others, len(set(others))]
        else:
            passing, params = "", []
        return self._sorted(
            f"""SELECT r.rationale_id, r.sample_id, r.comparison, i.dataset, i.split, i.key,
                i.class_index
            FROM rationales r JOIN images i ON i.image_id = r.sample_id
            WHERE NOT EXISTS (SELECT 1 FROM verdicts v
                              WHERE v.rationale_id = r.rationale_id AND v.check_name = 'judge')
            {passing}""",
            by=["rationale_id"],
            params=params,
        )

    def latest_image_root(self, dataset: str) -> str | None:
        """Where the dataset's images were last found: its latest plan's root, else the image
        root of its latest import."""
        plan = self.latest_plan(dataset)
        if plan and plan.get("root"):
            return str(plan["root"])
        return self.latest_import_root(dataset)

    def request_results(self, *, where: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Rationales joined with the request that produced them, filtered on request columns.

        ``raw_text`` is the rationale's own text or, when it has none, the request's response;
        the request's params are left out, which keeps a full read of a large store in memory.
        """
        clause, params = self._where("requests", where, alias="q.")
        sql = (
            "SELECT r.* REPLACE (coalesce(r.raw_text, q.response_text) AS raw_text), "
            "q.run_id, q.purpose, q.model, q.attempt, q.status, q.latency_s, "
            "q.prompt_tokens, q.completion_tokens, q.cost_usd, q.finished_at "
            f"FROM rationales r JOIN requests q USING (request_id){clause}"
        )
        return self._con.sql(sql, params=params).pl()

    def rationales_for_verify(self, *, only_unverified: bool) -> pl.DataFrame:
        """Every rationale with its text and its image's dataset and class, for the verifier.

        Unlike :meth:`request_results` this keeps rationales without a request (imports, human
        edits): ``raw_text`` is their own text, else the request's response. ``dataset`` and
        ``class_index`` are NULL when the rationale's ``sample_id`` is not in ``images`` (the
        verifier fails such a record rather than skipping it silently). ``only_unverified``
        keeps those without any verdict, which is what makes an interrupted run resumable.
        Ordered by rationale id, so batches are the same on every run.
        """
        unverified = (
            " WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.rationale_id = r.rationale_id)"
            if only_unverified
            else ""
        )
        return self._sorted(
            "SELECT r.rationale_id, r.sample_id, coalesce(r.raw_text, q.response_text) AS "
            "raw_text, i.dataset, i.class_index FROM rationales r "
            "LEFT JOIN requests q USING (request_id) "
            f"LEFT JOIN images i ON i.image_id = r.sample_id{unverified}",
            by=["rationale_id"],
        )

    def rationales_for_dedup(self, *, exclude: Sequence[str] = ()) -> pl.DataFrame:
        """Rationale ids, texts, dataset and class, except ``exclude`` (already indexed ones).

        The anti-join runs in DuckDB, so an incremental dedup reads only the new texts.
        """
        skip = pl.DataFrame({"rationale_id": list(exclude)}, schema={"rationale_id": pl.String})
        with self._registered("_cotforge_exclude", skip):
            return self._sorted(
                "SELECT r.rationale_id, coalesce(r.raw_text, q.response_text) AS text, "
                "coalesce(i.dataset, s.dataset) AS dataset, "
                "coalesce(i.class_index, s.class_index) AS class_index, r.created_at "
                "FROM rationales r "
                "LEFT JOIN requests q USING (request_id) "
                "LEFT JOIN images i ON i.image_id = r.sample_id "
                "LEFT JOIN samples s ON s.sample_id = r.sample_id "
                "ANTI JOIN _cotforge_exclude x USING (rationale_id)",
                by=["created_at", "rationale_id"],
                drop=["created_at"],
            )

    def rationale_ranks(self) -> pl.DataFrame:
        """Per rationale: required checks failed, checks passed, and when it was made.

        Dedup keeps the best-verified member of a cluster: fewest failed required checks, then
        most checks passed, then the earliest.
        """
        return self._con.sql(
            "SELECT r.rationale_id, r.created_at, "
            "count(v.check_name) FILTER (WHERE v.required AND NOT v.passed) AS failed_required, "
            "count(v.check_name) FILTER (WHERE v.passed) AS checks_passed "
            "FROM rationales r LEFT JOIN verdicts v USING (rationale_id) "
            "GROUP BY r.rationale_id, r.created_at"
        ).pl()

    def load_dedup_index(self, name: str) -> tuple[dict[str, Any], pl.DataFrame] | None:
        """The params of the dedup index ``name`` and its documents in the order they were
        added (``rationale_id``, ``exact_key``, ``group_key``, ``in_lsh``, ``signature``), or
        None when there is none or it lacks rows (a crash cannot leave that: rows and count
        are written together)."""
        head = self._con.execute(
            "SELECT params, documents FROM dedup_index WHERE name = ?", [name]
        ).fetchall()
        if not head:
            return None
        params, documents = head[0]
        rows = self._sorted(
            "SELECT position, rationale_id, exact_key, group_key, in_lsh, signature "
            "FROM dedup_signatures WHERE name = $name",
            by=["position"],
            params={"name": name},
            drop=["position"],
        )
        if rows.height != documents:
            return None
        return json.loads(params), rows

    def save_dedup_index(
        self, name: str, *, params: Mapping[str, Any], documents: pl.DataFrame, start: int
    ) -> None:
        """Write the documents of the dedup index ``name`` from position ``start`` on (those
        before are kept, later ones replaced) and its params, in one transaction."""
        rows = documents.select(
            pl.lit(name).alias("name"),
            pl.int_range(start, start + documents.height, dtype=pl.Int32).alias("position"),
            "rationale_id",
            "exact_key",
            "group_key",
            "in_lsh",
            "signature",
        )
        with self.transaction():
            self._con.execute(
                "DELETE FROM dedup_signatures WHERE name = ? AND position >= ?", [name, start]
            )
            self._insert("dedup_signatures", rows, key=("name", "position"), on_conflict="ignore")
            self._con.execute(
                "INSERT OR REPLACE INTO dedup_index (name, params, documents, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [name, _JSON.encode(dict(params)), start + documents.height, utcnow()],
            )

    def rationale_profiles(self, *, run_id: str | None = None) -> pl.DataFrame:
        """One row per rationale for the quality report: its dataset and class, and how long
        each stage is, in characters (NULL for a missing stage), with its candidate count.

        Texts are measured here and not returned, so profiling 100k multi-kB rationales stays
        small in memory. Dataset and class come from the image ``sample_id`` names, else from
        the planned sample. With ``run_id``, the rationales that run produced (through its requests
        or directly, e.g. an import), judged (verdicts) or clustered (duplicates).
        """
        scope, params = "", {}
        if run_id is not None:
            scope = """WHERE r.rationale_id IN (
                SELECT r.rationale_id FROM rationales r JOIN requests q USING (request_id)
                WHERE q.run_id = $run
                UNION SELECT rationale_id FROM verdicts WHERE run_id = $run
                UNION SELECT rationale_id FROM duplicates WHERE run_id = $run
                UNION SELECT rationale_id FROM rationales WHERE run_id = $run
            )"""
            params = {"run": run_id}
        sql = f"""SELECT r.rationale_id, r.sample_id, r.request_id,
                coalesce(i.dataset, s.dataset) AS dataset,
                coalesce(i.class_name, s.class_name) AS class_name,
                length(coalesce(r.raw_text, q.response_text)) AS text_chars,
                length(r.analysis) AS analysis_chars,
                nullif(length(array_to_string(r.candidates, ', ')), 0) AS options_chars,
                length(r.comparison) AS comparison_chars,
                length(r.prediction) AS prediction_chars,
                coalesce(len(r.candidates), 0) AS candidate_count
            FROM rationales r
            LEFT JOIN requests q USING (request_id)
            LEFT JOIN images i ON i.image_id = r.sample_id
            LEFT JOIN samples s ON s.sample_id = r.sample_id
            {scope}
            ORDER BY r.rationale_id"""
        return self._con.sql(sql, params=params).pl()

    def request_usage(self, *, run_id: str | None = None) -> pl.DataFrame:
        """Teacher calls without their texts or params (status, latency, tokens, cost), for
        reports that sum usage over a large store without loading every response."""
        clause, params = self._where("requests", {"run_id": run_id} if run_id else None)
        return self._con.sql(
            "SELECT request_id, run_id, purpose, model, status, latency_s, prompt_tokens, "
            f"completion_tokens, cost_usd FROM requests{clause} ORDER BY request_id",
            params=params,
        ).pl()

    _LATEST_REVIEW = """(
        SELECT rationale_id, decision, edited_text FROM (
            SELECT rationale_id, decision, edited_text, row_number() OVER (
                PARTITION BY rationale_id ORDER BY submitted_at DESC, reviewer DESC) AS n
            FROM reviews) WHERE n = 1
    ) v"""
    """Each rationale's latest review (by submission time, then reviewer), as ``v``."""

    _EXPORT_ORDER = "i.dataset, i.class_index, r.sample_id, r.rationale_id"

    def _curated(self, review: str) -> str:
        """The FROM/WHERE of the rationales an export takes under review policy ``review``.

        A rationale goes out when every required verdict passed (it has at least one), dedup
        did not flag it, no newer version of it exists (an edit is a new rationale whose
        ``parent_id`` names it), its ``sample_id`` is an image, and its latest review allows
        it: ``ignore`` reads no review; ``respect`` drops a 'reject'; ``require`` keeps only
        'accept' and 'edit'.
        """
        policies = {
            "ignore": "true",
            "respect": "v.decision IS DISTINCT FROM 'reject'",
            "require": "v.decision IN ('accept', 'edit')",
        }
        if review not in policies:
            msg = f"review policy must be one of {', '.join(policies)}; got {review!r}"
            raise ValueError(msg)
        return f"""FROM rationales r
            JOIN (SELECT rationale_id FROM verdicts GROUP BY rationale_id
                  HAVING bool_and(passed OR NOT required)) passing USING (rationale_id)
            JOIN images i ON i.image_id = r.sample_id
            LEFT JOIN {self._LATEST_REVIEW} USING (rationale_id)
            WHERE NOT EXISTS (SELECT 1 FROM duplicates d
                              WHERE d.rationale_id = r.rationale_id AND NOT d.kept)
                AND NOT EXISTS (SELECT 1 FROM rationales c WHERE c.parent_id = r.rationale_id)
                AND {policies[review]}"""

    def export_rationale_images(self, *, review: str) -> pl.DataFrame:
        """The rationales an export takes (see :meth:`_curated`) with their image, without
        their text, in export order (dataset, class, sample, rationale id): what an export
        checks before it writes, and the order it writes in."""
        return self._con.sql(
            "SELECT r.rationale_id, r.sample_id, i.dataset, i.split, i.key, i.class_index "
            f"{self._curated(review)} ORDER BY {self._EXPORT_ORDER}"
        ).pl()

    def export_rationales(self, *, review: str, batch_rows: int = 2048) -> Iterator[pl.DataFrame]:
        """The rationales an export takes (see :meth:`_curated`), in frames of ``batch_rows``,
        in export order, so every export of a store lists them alike.

        Each row has the rationale's ids, ``text`` (its training text: under ``respect`` and
        ``require`` a reviewer's edit replaces the original), its request's ``model`` and
        ``requested_at`` (NULL without a request), its image (``dataset``, ``split``, ``key``,
        ``class_index``, ``label``, ``class_name``), its planned ``class_split`` (NULL for an
        unplanned image, e.g. an import) and ``review`` (the latest decision or NULL).

        Only the ids are sorted at once; texts are fetched one batch at a time, since sorting
        them all made DuckDB hold every text (and run out of its memory at 50k rationales).
        No result stays open between batches, so other reads may run in between.
        """
        ids = self.export_rationale_images(review=review)["rationale_id"]
        original = "coalesce(r.raw_text, q.response_text)"
        text = original
        if review != "ignore":
            text = f"CASE WHEN v.decision = 'edit' THEN coalesce(v.edited_text, {original}) "
            text += f"ELSE {original} END"
        for start in range(0, len(ids), batch_rows):
            chunk = ids.slice(start, batch_rows)
            batch = pl.DataFrame({"rationale_id": chunk, "position": range(len(chunk))})
            with self._registered("_cotforge_batch", batch):
                yield self._con.sql(
                    "SELECT r.rationale_id, r.sample_id, r.request_id, q.model, "
                    f"q.created_at AS requested_at, {text} AS text, i.dataset, i.split, i.key, "
                    "i.class_index, i.label, i.class_name, s.class_split, v.decision AS review "
                    "FROM _cotforge_batch b JOIN rationales r USING (rationale_id) "
                    "JOIN images i ON i.image_id = r.sample_id "
                    "LEFT JOIN requests q USING (request_id) "
                    "LEFT JOIN samples s ON s.sample_id = r.sample_id "
                    f"LEFT JOIN {self._LATEST_REVIEW} USING (rationale_id) ORDER BY b.position"
                ).pl()

    def review_candidates(self, *, only: str, run_id: str | None = None) -> pl.DataFrame:
        """The rationales ``cotforge review push`` offers, newest versions only (an edited
        one's original is done), in export order, with what a reviewer sees.

        ``only``: 'accepted' (every required verdict passed and dedup did not flag it),
        'failed' (a required verdict failed) or 'all'; ``run_id`` keeps those its run wrote.
        Each row has the ids, ``text`` and the parsed stages, the teacher ``model`` and
        ``requested_at`` (NULL without a request), the image (``dataset``, ``split``, ``key``,
        ``class_index``, ``class_name``), ``failed`` (required checks failed), ``checks`` (a
        list of check_name/passed/required/reason) and ``duplicate`` (none, kept, flagged).
        """
        filters = {
            "accepted": "v.rationale_id IS NOT NULL AND len(coalesce(v.failed, [])) = 0 "
            "AND (d.kept IS NULL OR d.kept)",
            "failed": "len(coalesce(v.failed, [])) > 0",
            "all": "true",
        }
        if only not in filters:
            msg = f"only must be one of {', '.join(filters)}; got {only!r}"
            raise ValueError(msg)
        run = " AND (q.run_id = $run OR r.run_id = $run)" if run_id is not None else ""
        return self._sorted(
            f"""SELECT r.rationale_id, r.sample_id, r.version,
                coalesce(r.raw_text, q.response_text) AS text, r.analysis, r.candidates,
                r.comparison, r.prediction, q.model, q.created_at AS requested_at,
                i.dataset, i.split, i.key, i.class_index, i.class_name,
                coalesce(v.failed, []) AS failed, coalesce(v.checks, []) AS checks,
                CASE WHEN d.kept IS NULL THEN 'none' WHEN d.kept THEN 'kept' ELSE 'flagged' END
                    AS duplicate
            FROM rationales r
            JOIN images i ON i.image_id = r.sample_id
            LEFT JOIN requests q USING (request_id)
            LEFT JOIN (SELECT rationale_id,
                    list(check_name ORDER BY check_name)
                        FILTER (WHERE required AND NOT passed) AS failed,
                    list({{'check_name': check_name, 'passed': passed, 'required': required,
                          'reason': reason}} ORDER BY check_name) AS checks
                FROM verdicts GROUP BY rationale_id) v USING (rationale_id)
            LEFT JOIN duplicates d USING (rationale_id)
            WHERE NOT EXISTS (SELECT 1 FROM rationales c WHERE c.parent_id = r.rationale_id)
                AND {filters[only]}{run}""",
            by=["dataset", "class_index", "sample_id", "rationale_id"],  # _EXPORT_ORDER
            params={"run": run_id} if run_id is not None else None,
        )

    def review_pushes(self, dataset_name: str) -> pl.DataFrame:
        """The rationales pushed to an Argilla dataset, with the hash of what was sent."""
        return self._con.sql(
            "SELECT rationale_id, content_hash, run_id, pushed_at FROM review_pushes "
            "WHERE dataset_name = $name ORDER BY rationale_id",
            params={"name": dataset_name},
        ).pl()

    def version_chains(self, rationale_ids: Sequence[str]) -> pl.DataFrame:
        """Each of ``rationale_ids`` (``root_id``) with itself and every later version of it
        (edits name what they edit in ``parent_id``): ids, version, parent, text and image
        class, ordered by root and version, so a pull finds the latest text of each record.

        The chains are followed on ids alone and the texts joined in a second query: the two
        in one query ran out of DuckDB's memory on 15k texts of 4 kB under a 32 MiB limit.
        """
        ids = pl.DataFrame({"rationale_id": list(rationale_ids)}, schema={"rationale_id": pl.Utf8})
        with self._registered("_cotforge_roots", ids):
            chains = self._con.sql(
                """WITH RECURSIVE chain(root_id, rationale_id) AS (
                    SELECT rationale_id, rationale_id FROM rationales
                        SEMI JOIN _cotforge_roots USING (rationale_id)
                    UNION ALL
                    SELECT c.root_id, r.rationale_id FROM rationales r
                        JOIN chain c ON r.parent_id = c.rationale_id
                )
                SELECT root_id, rationale_id FROM chain"""
            ).pl()
        with self._registered("_cotforge_chains", chains):
            return self._sorted(
                """SELECT c.root_id, r.rationale_id, r.version, r.parent_id, r.sample_id,
                    coalesce(r.raw_text, q.response_text) AS text, i.dataset, i.class_index
                FROM _cotforge_chains c JOIN rationales r USING (rationale_id)
                LEFT JOIN requests q USING (request_id)
                LEFT JOIN images i ON i.image_id = r.sample_id""",
                by=["root_id", "version", "rationale_id"],
            )

    def question_answers(self) -> pl.DataFrame:
        """Every 'questions' request with the dataset its run planned for, oldest first: which
        paraphrases a rationale's student question was drawn from (generation asks once per
        dataset and teacher, and reuses a stored answer on reruns)."""
        return self._con.sql(
            "SELECT q.request_id, json_extract_string(u.config, '$.dataset') AS dataset, "
            "q.model, q.status, q.response_text, "
            "coalesce(q.finished_at, q.created_at) AS answered_at "
            "FROM requests q JOIN runs u USING (run_id) WHERE q.purpose = 'questions' "
            "ORDER BY answered_at, q.request_id"
        ).pl()

    def export_triplets(self) -> pl.DataFrame:
        """Every planned triplet with its anchor's class and the three images' split and key,
        ordered by dataset, class and anchor id."""
        return self._con.sql(
            """SELECT t.anchor_id, s.dataset, s.class_index, s.label, s.class_name, s.class_split,
                a.split AS anchor_split, a.key AS anchor_key,
                p.split AS positive_split, p.key AS positive_key,
                n.split AS negative_split, n.key AS negative_key,
                t.negative_class_index, t.strategy
            FROM triplets t JOIN samples s ON s.sample_id = t.anchor_id
            JOIN images a ON a.image_id = t.anchor_id
            JOIN images p ON p.image_id = t.positive_id
            JOIN images n ON n.image_id = t.negative_id
            ORDER BY s.dataset, s.class_index, t.anchor_id"""
        ).pl()

    def latest_import_root(self, dataset: str) -> str | None:
        """The folder the dataset's latest import resolved its image paths against (imported
        images' keys are relative to it, not to the dataset's official root)."""
        rows = self._con.execute(
            "SELECT json_extract_string(config, '$.resolved_image_root') FROM runs u "
            "WHERE kind = 'import' AND status = 'ok' AND EXISTS (SELECT 1 FROM rationales x "
            "JOIN images i ON i.image_id = x.sample_id WHERE x.run_id = u.run_id "
            "AND i.dataset = ?) ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [dataset],
        ).fetchall()
        return rows[0][0] if rows and rows[0][0] else None

    def image_datasets(self) -> list[str]:
        """The datasets the store has images of, by name."""
        rows = self._con.execute("SELECT DISTINCT dataset FROM images ORDER BY dataset").fetchall()
        return [row[0] for row in rows]

    def verdict_rates(self) -> pl.DataFrame:
        """Per check: rationales checked, passed, and how many verdicts counted it required."""
        return self._con.sql(
            "SELECT check_name, count(*) AS checked, count(*) FILTER (WHERE passed) AS passed, "
            "count(*) FILTER (WHERE required) AS required FROM verdicts "
            "GROUP BY check_name ORDER BY check_name"
        ).pl()

    def latest_run_config(self, kind: str) -> dict[str, Any] | None:
        """The options of the most recent finished (ok) run of ``kind``, or None."""
        rows = self._con.execute(
            "SELECT config FROM runs WHERE kind = ? AND status = 'ok' "
            "ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [kind],
        ).fetchall()
        return json.loads(rows[0][0]) if rows else None

    def prompt_versions(self, sample_ids: Sequence[str]) -> pl.DataFrame:
        """(purpose, model, prompt_hash, requests) of the answered requests about
        ``sample_ids`` and of the 'questions' requests of the teachers that wrote their
        rationales: the teachers and prompt versions behind a set of records."""
        ids = pl.DataFrame({"sample_id": list(sample_ids)}, schema={"sample_id": pl.String})
        with self._registered("_cotforge_samples", ids):
            return self._con.sql(
                """SELECT purpose, model, prompt_hash, count(*) AS requests FROM requests q
                WHERE q.status = 'ok' AND (
                    q.sample_id IN (SELECT sample_id FROM _cotforge_samples)
                    OR (q.purpose = 'questions' AND q.model IN (
                        SELECT model FROM requests WHERE purpose = 'rationale'
                        AND sample_id IN (SELECT sample_id FROM _cotforge_samples))))
                GROUP BY ALL ORDER BY purpose, model, prompt_hash"""
            ).pl()

    def stats(self) -> dict[str, Any]:
        """Counts for ``cotforge stats``: what is planned, asked, accepted, failed, reviewed.

        accepted: rationales with at least one verdict whose every required verdict passed and
        that dedup did not flag (``duplicates.kept = false``). failed: per required check, the
        rationales failing it.
        """
        query = self._con.execute
        counts = {
            name: query(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            for name in ("runs", "images", "samples", "triplets", "skipped", "rationales")
        }
        accepted = query(
            """SELECT count(*) FROM (
                SELECT rationale_id FROM verdicts GROUP BY rationale_id
                HAVING bool_and(passed OR NOT required)
            ) v JOIN rationales USING (rationale_id)
            WHERE NOT EXISTS (
                SELECT 1 FROM duplicates d WHERE d.rationale_id = v.rationale_id AND NOT d.kept
            )"""
        ).fetchall()[0][0]
        return {
            **counts,
            "requests": dict(
                query(
                    "SELECT status, count(*) FROM requests GROUP BY status ORDER BY status"
                ).fetchall()
            ),
            "accepted": accepted,
            "failed": dict(
                query(
                    "SELECT check_name, count(DISTINCT rationale_id) FROM verdicts "
                    "WHERE required AND NOT passed GROUP BY check_name ORDER BY check_name"
                ).fetchall()
            ),
            "duplicates": query("SELECT count(*) FROM duplicates WHERE NOT kept").fetchall()[0][0],
            "reviewed": query("SELECT count(DISTINCT rationale_id) FROM reviews").fetchall()[0][0],
            "exported": query(
                "SELECT count(DISTINCT rationale_id) FROM exports WHERE rationale_id IS NOT NULL"
            ).fetchall()[0][0],
        }


def _schema_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The file's schema version; 0 for a new, empty database."""
    tables = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store'"
        ).fetchall()
    }
    if "schema_version" in tables:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]
    if tables:
        msg = (
            f"{path} is a DuckDB database but not a cotforge store (no schema_version table); "
            f"pass --store PATH to a cotforge store or a new file"
        )
        raise StoreError(msg)
    return 0


def _migrate(con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool) -> None:
    """Apply pending migrations, each with its schema_version row in one transaction."""
    current = _schema_version(con, path)
    latest = MIGRATIONS[-1][0]
    if current > latest:
        msg = (
            f"{path} was written by a newer cotforge (schema v{current}, this one knows up to "
            f"v{latest}); upgrade cotforge"
        )
        raise StoreError(msg)
    pending = [(version, statements) for version, statements in MIGRATIONS if version > current]
    if pending and read_only:
        msg = (
            f"{path} has schema v{current} and this cotforge needs v{latest}; open it once "
            f"without --read-only to upgrade it"
        )
        raise StoreError(msg)
    for version, statements in pending:
        con.begin()
        try:
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
        except BaseException:
            with suppress(duckdb.TransactionException):
                con.rollback()
            raise
        con.commit()


def _open_error(path: Path, err: duckdb.Error, *, read_only: bool) -> StoreError:
    """Translate DuckDB's open failure into a one-line message that says what to do."""
    text = str(err).splitlines()[0]
    if "lock" in text.lower():
        pid = _LOCK_PID.search(text)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return StoreError(
            f"another cotforge process{holder} holds {path}; wait for it to finish or pass "
            f"--store PATH to another file"
        )
    if "not a valid DuckDB database" in text:
        return StoreError(
            f"{path} is not a DuckDB database; pass --store PATH to a cotforge store or a new file"
        )
    if isinstance(err, duckdb.ResourceInUseException):
        return StoreError(f"{path} is already open in this process; close that Store first")
    if not read_only and "Cannot open file" in text:
        return StoreError(f"{path} is not writable; pass --store PATH to a writable location")
    return StoreError(f"{path} cannot be opened ({text}); pass --store PATH to a cotforge store")
