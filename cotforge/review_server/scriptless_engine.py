"""An OpenSearch search engine for Argilla that never sends Painless scripts.

osmem (the in-memory OpenSearch that ``osmem-server`` ships) implements the document API but not
scripted updates, and Argilla 2.8 updates a record's responses in the index with a script: a
response submitted in the UI is committed to the database, then the index update fails with a
500 and the index silently disagrees with the database (per-user views, filters and progress go
wrong). The three scripted updates are redone here as get, change in Python, index again. That
is not atomic, which is fine for a single-node test or workstation stack; production points
``ARGILLA_ELASTICSEARCH`` at a real Elasticsearch/OpenSearch and needs none of this.

Argilla resolves its engine by name per request from a registry where the last registration
wins, so :func:`register` (called before the app serves) replaces the stock ``"opensearch"``
entry while keeping the name the app's own settings checks expect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


class ScriptlessUpdates:
    """The scripted updates of ``BaseElasticAndOpenSearchEngine``, without scripts.

    A mixin rather than a subclass so this module imports without ``argilla_server``; the
    concrete engine is assembled in :func:`register`.
    """

    client: Any

    async def _rewrite(self, index: str, doc_id: str, change: Callable[[dict], None]) -> None:
        """Fetch a record's document, apply ``change`` to its source, and index it back."""
        document = await self.client.get(index=index, id=doc_id)
        source = document["_source"]
        change(source)
        await self.client.index(index=index, id=doc_id, body=source, refresh=True)

    async def update_record_response(self, response: Any) -> None:
        """Add the response to its record's document, replacing one with the same id."""
        from argilla_server.search_engine.commons import es_index_name_for_dataset

        record = response.record
        mapped = self._map_record_response_to_es(response)  # type: ignore[attr-defined]
        # ids come back from the index as strings and from the mapping as UUIDs
        same = str(mapped["id"])

        def change(source: dict) -> None:
            kept = [r for r in source.get("responses") or [] if str(r.get("id")) != same]
            source["responses"] = [*kept, mapped]

        await self._rewrite(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_response(self, response: Any) -> None:
        """Remove the response from its record's document."""
        from argilla_server.search_engine.commons import es_index_name_for_dataset

        record = response.record
        gone = str(response.id)

        def change(source: dict) -> None:
            responses = source.get("responses") or []
            source["responses"] = [r for r in responses if str(r.get("id")) != gone]

        await self._rewrite(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_suggestion(self, suggestion: Any) -> None:
        """Remove the suggestion for one question from its record's document."""
        from argilla_server.search_engine.commons import es_index_name_for_dataset

        name = suggestion.question.name

        def change(source: dict) -> None:
            (source.get("suggestions") or {}).pop(name, None)

        index = es_index_name_for_dataset(suggestion.record.dataset)
        await self._rewrite(index, str(suggestion.record_id), change)


def register() -> type:
    """Register the scriptless engine as Argilla's ``"opensearch"`` engine and return it.

    Must run in the server process before the app serves a request (and in every rq worker
    process, which forks from the one that called it).
    """
    from argilla_server.constants import SEARCH_ENGINE_OPENSEARCH
    from argilla_server.search_engine.base import SearchEngine
    from argilla_server.search_engine.opensearch import OpenSearchEngine

    engine = dataclasses.dataclass(
        type("ScriptlessOpenSearchEngine", (ScriptlessUpdates, OpenSearchEngine), {})
    )
    return SearchEngine.register(engine_name=SEARCH_ENGINE_OPENSEARCH)(engine)
