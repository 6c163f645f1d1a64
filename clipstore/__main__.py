"""`python -m clipstore` runs the command line."""

from clipstore.cli import main

main()
