"""Code that runs INSIDE the Argilla server's own virtual environment, not cotforge's.

argilla-server 2.8 pins typer 0.9.4 (so ``click<8.2``) and cannot share an environment with
cotforge; :mod:`cotforge.argilla_stack` runs ``python <this folder>`` with the server venv's
interpreter, which executes ``__main__.py`` with this folder first on ``sys.path``. So the
modules here import only the standard library at import time (pytest's doctest collection and
cotforge itself may import them) and reach for ``argilla_server`` inside their functions.
``requirements.txt`` pins what the server venv installs.
"""
