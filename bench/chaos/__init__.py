"""Chaos runs of the nightly reconciliation (``make chaos``; see docs/chaos.md)."""
