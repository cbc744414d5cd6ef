"""``python -m genhook``: the same as the ``genhook`` command."""

from genhook.cli import main

main()
