"""Who may call the HTTP API and the media-server hooks: a bearer token, or loopback clients when none is set."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web


def is_loopback(remote: str | None) -> bool:
    try:
        addr = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def authorized(request: web.Request, token: str | None, allow_query: bool = False) -> str | None:
    """None when the request may go on, else why not. With a token: `Authorization: Bearer <token>` (or, for
    media-server hooks that cannot send headers, `?token=`); without one: loopback clients only."""
    if not token:
        if is_loopback(request.remote):
            return None
        return "no server.api_token is set, so only loopback clients are served"
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if not given and allow_query:
        given = request.query.get("token", "")
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    return "the bearer token is wrong" if given else "missing Authorization header: send `Bearer <server.api_token>`"
