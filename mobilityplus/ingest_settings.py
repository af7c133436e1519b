"""Settings of the status ingest pool (mobilityplus/ingest_server.py): the platform's, with only the middleware an
OCPI call needs.

The ingest pool answers OCPI and /healthz only (`mobilityplus.ingest_wsgi` refuses every other path). OCPI calls
authenticate by token, are exempt from CSRF, and read no session, user, message, staff time zone or static file, so
the browser-facing middleware is left out: a quarter of a status PATCH's application CPU in Django (docs/scaling.md).
"""

from mobilityplus.settings import *  # noqa: F403

# HTTPS redirect and security headers; the allowed hosts (CommonMiddleware asks for the host).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
