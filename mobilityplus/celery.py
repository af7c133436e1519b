"""The Celery application: broker and schedule come from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")

app = Celery("mobilityplus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="mobilityplus.heartbeat")
def heartbeat(token: str) -> dict:
    """Answer from a worker: proves the broker delivers tasks and a worker runs them."""
    import socket

    from django.utils import timezone

    return {"token": token, "worker": socket.gethostname(), "at": timezone.now().isoformat()}
