"""The Client Portal Web API client: settings, auth providers, transport and rate limits."""

from ibkr_tasks.client.api import IBKRClient
from ibkr_tasks.client.auth import (
    AuthProvider,
    OAuth2PrivateKeyJWT,
    SidecarBearer,
    StaticBearer,
    auth_from_settings,
)
from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.client.ratelimit import InProcessBackend, Limit, LimiterBackend, RateLimiter, get_limiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

__all__ = [
    "AuthProvider",
    "IBKRClient",
    "IBKRSettings",
    "InProcessBackend",
    "Limit",
    "LimiterBackend",
    "OAuth2PrivateKeyJWT",
    "PromptPolicy",
    "RateLimiter",
    "SidecarBearer",
    "StaticBearer",
    "Transport",
    "auth_from_settings",
    "get_limiter",
]
