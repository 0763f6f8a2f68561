"""`python -m shelfmark`: the CLI, for when the `shelfmark` script is not on the PATH."""

from shelfmark.cli import main

main()
