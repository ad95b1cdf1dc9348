"""A local Argilla 2.8 stack for tests and for users without a server: redis, an in-memory
OpenSearch (osmem) and the Argilla server, each on a free loopback port, started and stopped
from cotforge's own environment.

argilla-server pins typer 0.9.4 (hence ``click<8.2``), which cotforge's environment cannot
hold, so the server lives in its own virtual environment: ``$COTFORGE_ARGILLA_VENV``, else
``~/.cache/cotforge/argilla-server``, made from the pinned
``cotforge/review_server/requirements.txt`` (:func:`install_server_venv`). ``osmem-server``
brings the search engine binary; Debian's ``redis-server`` brings redis. The server process runs
``cotforge/review_server`` with that venv's interpreter: one import of argilla_server migrates
the database, creates the users and serves (three separate CLI calls cost ~20 s more).

osmem keeps everything in memory, so the stack keeps nothing between starts: its files live in
a fresh folder that :meth:`ArgillaStack.stop` removes. Production points
``ARGILLA_ELASTICSEARCH`` at a real Elasticsearch/OpenSearch and needs none of this.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import httpx

from cotforge.errors import ReviewError

if TYPE_CHECKING:
    from rich.console import Console

SERVER_CODE = Path(__file__).parent / "review_server"
"""The folder the server venv's interpreter runs (its ``__main__.py``)."""
REQUIREMENTS = SERVER_CODE / "requirements.txt"
VENV_ENV = "COTFORGE_ARGILLA_VENV"
DEFAULT_VENV = Path("~/.cache/cotforge/argilla-server")
OSMEM_ENV = "OSMEM_SERVER_BIN"
WORKSPACE = "cotforge"
START_TIMEOUT_S = 180.0
"""Generous: a cold start is ~15 s here, but a loaded CI box imports the server slowly."""
_STOP_GRACE_S = 10.0
_LOG_TAIL = 1500
_HIDDEN_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
"""Settings of cotforge's interpreter that must not leak into the server venv's."""


def install_hint(venv: Path) -> str:
    """The commands that create the server venv, for error messages."""
    return f"python3 -m venv {venv} && {venv}/bin/pip install -r {REQUIREMENTS}"


def server_venv(path: Path | None = None) -> Path:
    """The server venv's folder: ``path``, else ``$COTFORGE_ARGILLA_VENV``, else the default."""
    chosen = path or os.environ.get(VENV_ENV) or DEFAULT_VENV
    return Path(chosen).expanduser()


def server_python(venv: Path) -> Path:
    """The server venv's interpreter; :class:`ReviewError` saying how to create it if absent."""
    python = venv / "bin" / "python"
    if not python.is_file():
        msg = (
            f"no Argilla server environment at {venv} (set {VENV_ENV} to another); create it "
            f"with `cotforge review serve --install` or: {install_hint(venv)}"
        )
        raise ReviewError(msg)
    return python


def install_server_venv(venv: Path, *, console: Console | None = None) -> Path:
    """Create the server venv from the pinned requirements (a minute or two with pip)."""
    say = console.print if console is not None else print
    say(f"creating the Argilla server environment in {venv} (pip, about 1-2 minutes)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
        subprocess.run(pip, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        msg = f"creating the Argilla server environment failed ({err}); try by hand: "
        raise ReviewError(msg + install_hint(venv)) from err
    return server_python(venv)


def osmem_binary(venv: Path) -> Path:
    """The osmem-server binary inside the server venv (``$OSMEM_SERVER_BIN`` overrides)."""
    given = os.environ.get(OSMEM_ENV)
    if given:
        return Path(given)
    found = sorted(venv.glob("lib/python3*/site-packages/osmem_server/bin/osmem-server"))
    if not found:
        msg = (
            f"the server environment {venv} has no osmem-server binary; install it there: "
            f"{venv}/bin/pip install -r {REQUIREMENTS}"
        )
        raise ReviewError(msg)
    return found[-1]


def redis_binary() -> Path:
    """``redis-server`` from PATH; :class:`ReviewError` saying how to install it if absent."""
    found = shutil.which("redis-server")
    if found is None:
        msg = "redis-server is not on PATH; install it (apt-get install redis-server)"
        raise ReviewError(msg)
    return Path(found)


def free_port() -> int:
    """A loopback port free right now (redis refuses port 0, so ports are chosen here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ArgillaUser:
    """One user the stack creates; passwords and keys are random per start."""

    username: str
    role: str
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def spec(self, workspace: str) -> dict[str, object]:
        """What the server side's bootstrap takes (annotators join ``workspace``)."""
        return {
            "first_name": self.username.capitalize(),
            "username": self.username,
            "role": self.role,
            "password": self.password,
            "api_key": self.api_key,
            "workspaces": [workspace] if self.role != "owner" else [],
        }


@dataclass
class ArgillaStack:
    """A running local stack; :meth:`stop` (or leaving the ``with`` block) ends it."""

    url: str
    owner: ArgillaUser
    annotators: tuple[ArgillaUser, ...]
    workspace: str
    folder: Path
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def log(self, name: str) -> str:
        """The tail of a component's log (``redis``, ``osmem``, ``argilla``), for messages."""
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-_LOG_TAIL:] if path.is_file() else ""

    def check_running(self) -> None:
        """Raise :class:`ReviewError` with its log's tail when a process of the stack died."""
        for name, process in self._processes:
            if process.poll() is not None:
                msg = (
                    f"the local Argilla stack's {name} exited with code {process.returncode}; "
                    f"its log ends: {self.log(name)!r}"
                )
                raise ReviewError(msg)

    def stop(self) -> None:
        """Stop every process the stack started (server first), by pid, and remove its files."""
        for _name, process in reversed(self._processes):
            if process.poll() is None:
                if process.stdin is not None:
                    process.stdin.close()  # osmem exits when its stdin closes
                process.terminate()
                try:
                    process.wait(_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_stack(
    home: Path,
    *,
    venv: Path | None = None,
    annotators: int = 1,
    workspace: str = WORKSPACE,
    timeout_s: float = START_TIMEOUT_S,
) -> ArgillaStack:
    """Start redis, osmem and Argilla on free loopback ports, with an owner and ``annotators``
    annotators (``annotator``, ``annotator2``, ...) in ``workspace``; return when Argilla
    answers ``GET /api/v1/status``.

    Every missing piece is named before anything starts. Redis and osmem start first and the
    server right after: it imports for seconds and then waits for them with back-off.
    """
    venv = server_venv(venv)
    python = server_python(venv)
    osmem = osmem_binary(venv)
    redis = redis_binary()
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="argilla-stack-", dir=home))
    names = ["annotator", *(f"annotator{n}" for n in range(2, annotators + 1))][:annotators]
    stack = ArgillaStack(
        url="",
        owner=ArgillaUser("owner", "owner"),
        annotators=tuple(ArgillaUser(name, "annotator") for name in names),
        workspace=workspace,
        folder=folder,
    )
    try:
        redis_port, osmem_port, port = free_port(), free_port(), free_port()
        _spawn(
            stack,
            "redis",
            [
                str(redis),
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
        )
        # stdin stays piped: osmem exits when it closes, so it cannot outlive this process
        _spawn(stack, "osmem", [str(osmem), "-addr", f"127.0.0.1:{osmem_port}"], stdin=True)
        users = [stack.owner, *stack.annotators]
        env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV} | {
            "ARGILLA_HOME_PATH": str(folder / "home"),
            "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'argilla.db'}",
            "ARGILLA_SEARCH_ENGINE": "opensearch",
            "ARGILLA_ELASTICSEARCH": _osmem_url(stack, timeout_s),
            "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "COTFORGE_ARGILLA_USERS": json.dumps([user.spec(workspace) for user in users]),
        }
        command = [str(python), str(SERVER_CODE), "--host", "127.0.0.1", "--port", str(port)]
        _spawn(stack, "argilla", command, env=env)
        stack.url = f"http://127.0.0.1:{port}"
        _wait_ready(stack, timeout_s)
    except BaseException:
        stack.stop()
        raise
    return stack


def _spawn(
    stack: ArgillaStack,
    name: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: bool = False,
) -> None:
    log = (stack.folder / f"{name}.log").open("wb")
    stack._logs.append(log)
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    stack._processes.append((name, process))


def _osmem_url(stack: ArgillaStack, timeout_s: float) -> str:
    """The URL in the JSON line osmem prints once it listens."""
    deadline = time.monotonic() + timeout_s
    log = stack.folder / "osmem.log"
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                return json.loads(line)["url"]
        stack.check_running()
        time.sleep(0.05)
    msg = f"osmem did not report its address within {timeout_s:.0f} s: {stack.log('osmem')}"
    raise ReviewError(msg)


def _wait_ready(stack: ArgillaStack, timeout_s: float) -> None:
    """Poll ``/api/v1/status`` (``/api/_status`` is the UI's catch-all page, proving nothing)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            stack.check_running()
            try:
                if client.get(f"{stack.url}/api/v1/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    msg = f"Argilla did not answer at {stack.url} within {timeout_s:.0f} s: {stack.log('argilla')}"
    raise ReviewError(msg)
