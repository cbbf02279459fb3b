"""Marshmallow schemas: incoming webhook payloads, Planfix resources, the link configuration.

This package imports nothing of ours, so every other room may depend on it.
"""
