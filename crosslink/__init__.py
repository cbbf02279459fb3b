"""Crosslink: keeps tasks in sync between two Planfix accounts.

This package holds the glue that sits above the four rooms of the house (schemas, planfix,
producers, workers): the command line, settings, logging and the embedded Redis used by the
demo and the tests.
"""
