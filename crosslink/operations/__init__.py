"""What an operator runs, without the command line: backfill, doctor, check, health, status.

Each operation is a function the command line (crosslink.cli) parses arguments for and calls; none
imports click, so tests and the lab call them directly.
"""
