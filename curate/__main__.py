"""``python -m curate``: the same command line as the ``curate`` command."""

from curate.cli import main

main()
