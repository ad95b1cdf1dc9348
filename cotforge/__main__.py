"""``python -m cotforge`` runs the command line."""

from cotforge.cli import main

main()
