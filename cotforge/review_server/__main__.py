"""Entry point the stack runs with the server venv's interpreter: ``python <this folder>``.

Migrates the database, creates the users named in ``$COTFORGE_ARGILLA_USERS`` (JSON, so no
password or key shows in the process list), registers the scriptless search engine, builds the
server's settings validators once (:mod:`speedups`), and serves
Argilla with uvicorn until terminated. Every other setting is Argilla's own ``ARGILLA_*``
environment.
"""

from __future__ import annotations

import argparse
import json
import os

import bootstrap
import scriptless_engine
import speedups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    bootstrap.migrate()
    bootstrap.create_users(json.loads(os.environ.get("COTFORGE_ARGILLA_USERS", "[]")))
    scriptless_engine.register()
    speedups.install()

    import uvicorn
    from argilla_server import app

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
