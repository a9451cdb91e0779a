"""The Client Portal Web API client: settings, auth providers, transport and rate limits."""

from ibkr_tasks.client.auth import (
    AuthProvider,
    OAuth2PrivateKeyJWT,
    SidecarBearer,
    StaticBearer,
    auth_from_settings,
)
from ibkr_tasks.client.ratelimit import InProcessBackend, Limit, LimiterBackend, RateLimiter, get_limiter
from ibkr_tasks.client.settings import IBKRSettings
from ibkr_tasks.client.transport import Transport

__all__ = [
    "AuthProvider",
    "IBKRSettings",
    "InProcessBackend",
    "Limit",
    "LimiterBackend",
    "OAuth2PrivateKeyJWT",
    "RateLimiter",
    "SidecarBearer",
    "StaticBearer",
    "Transport",
    "auth_from_settings",
    "get_limiter",
]
