"""Prepare a fresh Argilla database: migrate it and create the stack's users, in-process.

``python -m argilla_server database migrate`` and each ``database users create`` cost about
7 s apiece, nearly all of it importing the server; running their code in the process that then
serves saves two of those three imports. Creating a user that exists already is skipped (by
username or API key), so a stack restarted over the same home keeps its users.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any


def migrate() -> None:
    """Bring the database (``ARGILLA_DATABASE_URL``) to the server's latest schema."""
    from argilla_server.cli.database.migrate import migrate_db

    migrate_db(revision="head")


def create_users(users: Sequence[Mapping[str, Any]]) -> None:
    """Create each user (keys: first_name, username, role, password, api_key, workspaces).

    The pool is disposed before returning: its connections belong to this event loop, and the
    server runs its own.
    """
    from argilla_server.cli.database.users.create import _create
    from argilla_server.database import async_engine

    async def run() -> None:
        try:
            for user in users:
                await _create(
                    first_name=user["first_name"],
                    username=user["username"],
                    role=user["role"],
                    password=user["password"],
                    api_key=user["api_key"],
                    workspace=list(user.get("workspaces", [])),
                )
        finally:
            await async_engine.dispose()

    asyncio.run(run())
