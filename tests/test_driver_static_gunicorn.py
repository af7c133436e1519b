"""`make serve` alone serves a working site: gunicorn in production mode serves the styles and scripts itself
(whitenoise), compressed, under content-hashed names cached for a year, and the map works in a real browser."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest
from django.db import connection as db_connection
from playwright.sync_api import expect

from roaming.models import RoamingAgreement
from tests.factories import MapLocationFactory, RoamingAgreementFactory
from tests.served_platform import ROOT, production_env, served

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    database = db_connection.settings_dict
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    return f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def get(url: str, **headers: str):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)


def test_gunicorn_alone_serves_styles_scripts_and_a_working_map(browser, tmp_path):
    partner = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
    MapLocationFactory(party=partner, name="Gent Sint-Pieters", latitude=51.036, longitude=3.710)
    env = production_env(DATABASE_URL=database_url(), STATIC_ROOT=str(tmp_path / "static"))
    # What `make serve` does before gunicorn (the Makefile's serve target).
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\t\$\(PY\) manage.py collectstatic --noinput", makefile, re.M)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    with served(env, tmp_path / "gunicorn.log") as platform:
        html = get(platform.url + "/").read().decode()
        # Hashed names: a changed file gets a new URL, so every file can be cached for a year.
        css = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', html)
        script = re.search(r'src="(/static/map/map\.[0-9a-f]{12}\.js)"', html)
        assert css and script, html[:2000]
        answer = get(platform.url + css.group(1), **{"Accept-Encoding": "gzip"})
        assert answer.status == 200
        assert answer.headers["Content-Encoding"] == "gzip"
        assert "max-age=315360000" in answer.headers["Cache-Control"]
        assert answer.headers["Content-Type"].startswith("text/css")
        favicon = get(platform.url + "/favicon.ico")
        assert favicon.status == 200 and favicon.url.endswith(".svg")

        page = browser.new_page()
        page.route(re.compile(r"https?://(?!127\.0\.0\.1).*"), lambda route: route.abort())
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "/static/" in r.url else None)
        page.goto(platform.url + "/?lat=51.036&lon=3.71&z=14")
        page.wait_for_function("() => document.body.dataset.mapLoaded", timeout=15000)
        # The design is applied (the header's colour comes from site.css) and the scripts ran (a marker).
        assert page.eval_on_selector(".topbar", "e => getComputedStyle(e).backgroundColor") == "rgb(11, 79, 108)"
        expect(page.locator(".station-icon")).to_have_count(1)
        # No tile server: the offline basemap (a vendored static file) is drawn instead.
        page.wait_for_function("() => document.body.dataset.basemap === 'offline'", timeout=15000)
        assert failed == []
        page.close()


def test_two_servers_started_at_once_on_a_new_machine_collect_the_static_files_once(tmp_path):
    """The two pools (docs/scaling.md) start together: both come up, and the files are collected whole."""
    env = production_env(DATABASE_URL=database_url(), STATIC_ROOT=str(tmp_path / "static"))
    start = [sys.executable, "-c", "from mobilityplus.static_files import collect_if_missing; collect_if_missing()"]
    servers = [subprocess.Popen(start, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [server.communicate(timeout=300)[1] for server in servers]
    assert [server.returncode for server in servers] == [0, 0], errors
    assert (tmp_path / "static" / "staticfiles.json").exists()
    assert list((tmp_path / "static" / "css").glob("site.*.css.gz"))
