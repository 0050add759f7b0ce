"""A short per-process memory of client registrations.

Every token, introspection and revocation request authenticates a client; reading the
``clients`` row each time was a third of the work of a client_credentials request. Clients
change rarely (registration, disabling), so each process keeps what it read for a few seconds
(``AUTHSERVER_CLIENT_CACHE_SECONDS``, default 5; 0 turns the cache off).

What that means for operators: a client disabled or deleted on one instance stops
authenticating on the others within that many seconds; in the process that made the change,
at once (the ORM events below). A wrong secret never trusts the cache: it re-reads the row
before it is counted as a failure, so a freshly registered secret works at once.

Unknown client ids are not remembered, so guessing ids cannot grow the cache.
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, make_transient_to_detached

from authserver.models import Client
from authserver.services.clients import find_client

# Far more clients than a deployment registers; past it the cache starts over.
MAX_ENTRIES = 10_000

_every_cache: weakref.WeakSet[ClientCache] = weakref.WeakSet()


class ClientCache:
    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[datetime, Client]] = {}
        self._lock = threading.Lock()
        _every_cache.add(self)

    def lookup(self, session: Session, client_id: str, now: datetime) -> Client | None:
        """The client, attached to ``session``, from memory if it was read less than ``ttl``
        ago, else from the database."""
        if self.ttl > timedelta(0):
            entry = self._entries.get(client_id)
            if entry is not None and timedelta(0) <= now - entry[0] < self.ttl:
                # load=False: a copy for this session without a query (the cached object is
                # never attached to any session, so threads can share it).
                return session.merge(entry[1], load=False)
        return self.reload(session, client_id, now)

    def reload(self, session: Session, client_id: str, now: datetime) -> Client | None:
        """Read the client from the database (refreshing a copy this session already has)
        and remember it."""
        client = find_client(session, client_id, fresh=True)
        if client is None or self.ttl <= timedelta(0):
            self.forget(client_id)
            return client
        # A detached copy, as if just loaded: merge(load=False) accepts nothing else.
        snapshot = Client(**{column: getattr(client, column) for column in _COLUMNS})
        make_transient_to_detached(snapshot)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[client_id] = (now, snapshot)
        return client

    def forget(self, client_id: str) -> None:
        with self._lock:
            self._entries.pop(client_id, None)


_COLUMNS = tuple(column.key for column in Client.__mapper__.column_attrs)


@event.listens_for(Client, "after_update")
@event.listens_for(Client, "after_delete")
def _forget_changed_client(_mapper: Any, _connection: Any, client: Client) -> None:
    for cache in list(_every_cache):
        cache.forget(client.client_id)
