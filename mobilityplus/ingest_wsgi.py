"""The status ingest pool's WSGI application (served by mobilityplus/ingest_server.py): OCPI and /healthz only.

Its settings (`mobilityplus.ingest_settings`) leave out the middleware browsers need (sessions, CSRF, logins,
content policy), which is safe only because nothing but OCPI's token-authenticated calls reaches Django here: a
staff or driver page asked of this pool (a load balancer routing by mistake) gets a plain 404.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "mobilityplus.ingest_settings"
platform = get_wsgi_application()


def application(environ: dict, start_response):
    """The platform for OCPI and /healthz; a 404 for every other path."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/ocpi/") or path == "/healthz":
        return platform(environ, start_response)
    body = b"Not served here: this server takes partners' OCPI calls only.\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
