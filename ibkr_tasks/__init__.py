"""ibkr-tasks: Prefect tasks and flows for the Interactive Brokers Client Portal Web API."""

__version__ = "0.1.0"
