"""``python -m xlqa``: the command line."""

from xlqa.cli.main import main

main()
