"""Prefect flows of ibkr-tasks (entrypoints named in prefect.yaml)."""
