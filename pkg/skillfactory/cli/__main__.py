"""`python -m skillfactory.cli` runs the command line."""

from skillfactory.cli import main

main()
