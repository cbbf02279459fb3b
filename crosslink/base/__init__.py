"""The lowest floor: settings, logging setup and metric definitions.

Every other part of Crosslink may import these; they import nothing of ours, so a process of any
kind (producer, worker, beat, an operator's command) can read its settings, log and count before
it knows what it is.
"""
