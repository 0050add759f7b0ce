"""The boundary's view of the current request, for services that must not read Flask."""

from __future__ import annotations

from flask import request

from authserver.runtime import runtime
from authserver.services.sign_in import RequestContext


def request_context() -> RequestContext:
    """Who is asking (address after the trusted proxies, user agent) and the runtime's now."""
    return RequestContext(
        ip_address=request.remote_addr,
        user_agent=request.user_agent.string,
        now=runtime().now(),
    )
