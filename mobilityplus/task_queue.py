"""Queuing a Celery task from a request: what a broker (Redis) that is down raises.

Publishing gives up within about CELERY_PUBLISH_TIMEOUT_S (settings); callers catch QUEUE_ERRORS and either
tell the user at once (a command nobody could send) or leave a durable row that a beat task picks up later
(a token push, a command result), so nothing is lost and no request answers 500.
"""

from __future__ import annotations

import redis.exceptions
from kombu.exceptions import OperationalError as BrokerUnavailable

QUEUE_ERRORS = (BrokerUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
