# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint worker beat serve serve-ingest applier

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# The demo asks for development mode (DEBUG=true: built-in keys, tracebacks) and lets partner URLs point at
# this machine (the demo's partners run on 127.0.0.1). Never use these settings for a real server.
DEMO_ENV := DEBUG=true OCPI_ALLOW_PRIVATE_NETWORK_URLS=true

demo: install
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py load_demo
	$(DEMO_ENV) $(PY) manage.py runserver 127.0.0.1:8000

# The suite runs on the real servers (PostgreSQL, Redis), as CI does; set DATABASE_URL / REDIS_URL to use others.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mobilityplus
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

test: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

worker: install
	$(VENV)/bin/celery -A mobilityplus worker --loglevel=info

beat: install
	$(VENV)/bin/celery -A mobilityplus beat --loglevel=info --schedule=/tmp/mobilityplus-celerybeat-schedule

# With STATUS_INBOX=true: the one process applying queued status PATCHes (docs/scaling.md, "The status inbox").
applier: install
	$(PY) manage.py apply_status_inbox

# collectstatic first: gunicorn serves the static files itself (whitenoise), compressed and with hashed names.
serve: install
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(VENV)/bin/gunicorn mobilityplus.wsgi -c mobilityplus/gunicorn.conf.py

# The status ingest pool (partners' location pushes, routed here by path; docs/scaling.md, "Two pools"): granian on
# INGEST_BIND (127.0.0.1:8001), at INGEST_NICE (19) beside the main pool.
serve-ingest: install
	$(PY) -m mobilityplus.ingest_server
