"""What an operator runs, without the command line: backfill, decisions, doctor, check, health,
reconcile, dead letters, relink and status, with the operator session they share.

Each operation is a function the command line (crosslink.cli) parses arguments for and calls; none
imports click, so tests and the lab call them directly. A run that reports as it goes takes a
callable to say it with (click.echo's shape) rather than printing.
"""
