"""A Client Portal Gateway simulator: IBKR's Web API (``/v1/api``) with its quirks, plus ground truth.

Run it in-process (``httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://sim")``)
or as a server (``python -m ibkr_tasks.sim --port 5000``). See docs/simulator.md.
"""

from ibkr_tasks.sim.asgi import SimApp, create_app
from ibkr_tasks.sim.scenario import Quirks, Scenario
from ibkr_tasks.sim.state import SimState, SimulatedReadTimeout

__all__ = ["Quirks", "Scenario", "SimApp", "SimState", "SimulatedReadTimeout", "create_app"]
