"""`python -m clipstore.cli` runs the command line."""

from clipstore.cli import main

main()
