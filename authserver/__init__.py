"""authserver: an OAuth 2.1 / OpenID Connect authorization server.

Production serving: ``gunicorn 'authserver:create_app()'``. The server is loaded only when
``create_app`` is asked for, so a resource server can import ``authserver.resource`` without
the server's own dependencies (SQLAlchemy, authlib, argon2, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authserver.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from authserver.app import create_app

        return create_app
    raise AttributeError(f"module 'authserver' has no attribute {name!r}")
