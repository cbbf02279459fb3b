"""`python -m crosslink.cli`: the same command line as the installed `crosslink`."""

from crosslink.cli import main

main()
