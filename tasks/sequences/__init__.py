"""Sequences: a protocol of several steps as one unit (docs/sequences.md)."""
