"""Hot paths keep answering while the database stalls or is down.

The request path of an authorization (at our stations, and of our cards for partner CPOs over OCPI) reads the
database only to refresh its per-process caches (the look for changed cards, a card or EVSE not cached yet, a
foreign token, the partner-data change counter, a partner's connection and agreements). Those reads run under
`bounded_queries()`: on PostgreSQL a statement may then take at most CARDS_DB_STATEMENT_TIMEOUT_MS (set with
SET LOCAL, so feed pulls, migrations and the rest keep the server's default), and a failure surfaces as one of
`DATABASE_ERRORS`, which the callers turn into a decision from the warm cache instead of an HTTP 500.
A refused connection fails at once; an unreachable host costs at most DB_CONNECT_TIMEOUT_S.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import Error, connection, transaction

# django.db.Error: OperationalError (down, statement timeout), InterfaceError (connection gone) and the rest.
DATABASE_ERRORS = (Error,)


@contextmanager
def bounded_queries() -> Iterator[None]:
    """Queries inside may wait at most CARDS_DB_STATEMENT_TIMEOUT_MS for the database (PostgreSQL), then raise.

    Inside an enclosing transaction (a caller's atomic block, a test) the caller's settings are left alone.
    """
    timeout_ms = settings.CARDS_DB_STATEMENT_TIMEOUT_MS
    if connection.vendor != "postgresql" or connection.in_atomic_block or timeout_ms <= 0:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(int(timeout_ms))])
        yield
