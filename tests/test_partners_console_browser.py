"""The staff console in headless Chromium: the data-quality chart (one bar per partner, worst first), the staff
overview after login, and a partner's dashboard following a running sync (screenshots in docs/screenshots/)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from tests.factories import EVSEFactory, LocationFactory, PartnerConnectionFactory, PartyFactory, UserFactory


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_data_quality_chart_in_a_browser(live_server, browser):
    UserFactory(username="stella", is_staff=True, is_superuser=True)
    good = PartyFactory(name="Good Data", party_id="GOO")
    PartnerConnectionFactory(party=good)
    EVSEFactory(
        location=LocationFactory(party=good, opening_times={"twentyfourseven": True}),
        status_changed_at=timezone.now(),
    )
    poor = PartyFactory(name="Poor Data", party_id="POO")
    PartnerConnectionFactory(party=poor)
    EVSEFactory(location=LocationFactory(party=poor, address="#NA"), status="UNKNOWN")

    page = browser.new_page()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/roaming/party/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "secret-password")
    page.click("input[type=submit]")
    page.click("text=Partner data quality")
    page.wait_for_selector("svg.dq-chart")
    labels = page.locator("svg.dq-chart g text:first-child").all_text_contents()
    widths = [float(w) for w in page.locator("svg.dq-chart rect").evaluate_all("rs => rs.map(r => r.getBBox().width)")]
    rows = page.locator("#data-quality tbody tr td:first-child a").all_inner_texts()

    assert labels == ["Poor Data", "Good Data"]
    assert rows == ["Poor Data", "Good Data"]
    assert widths[0] < widths[1] and widths[1] == 380  # full score is the full bar


SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_staff_overview_and_a_partner_dashboard_following_a_running_sync(live_server, browser):
    from stations.models import SyncRun
    from tests.test_staff_dashboard import partner_with_everything

    UserFactory(username="stella", is_staff=True, is_superuser=True)
    party = partner_with_everything()
    broken = PartyFactory(name="Ionity", party_id="ION", country_code="DE")
    PartnerConnectionFactory(party=broken, last_error="HTTP 502 from their versions endpoint")
    run = SyncRun.objects.create(
        connection=party.connection, full=True, status="running", started_at=timezone.now() - dt.timedelta(minutes=2),
        pages=12, unchanged=1150, rejected=4, expected_objects=6000,
    )  # fmt: skip
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    csp_errors = []
    page.on("console", lambda message: "Content Security Policy" in message.text and csp_errors.append(message.text))

    # Staff log in where drivers do, and land on the staff overview.
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "secret-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#needing-attention")
    assert page.url == f"{live_server.url}/admin/"
    assert page.locator("#needing-attention tbody tr").count() == 2
    assert page.locator("#staff-zone").text_content() == "Times in Europe/Brussels."
    page.screenshot(path=str(SCREENSHOTS / "staff-overview.png"), full_page=True)

    page.click("#needing-attention >> text=TotalEnergies")
    page.wait_for_selector("#partner-dashboard")
    page.wait_for_function("() => Number(document.getElementById('sync-progress').dataset.polled || 0) >= 1")
    assert page.locator('[data-sync="headline"]').inner_text() == "A full sync is running"
    # The worker stores more pages: the page follows without being reloaded.
    SyncRun.objects.filter(pk=run.pk).update(pages=30, unchanged=2950)
    page.wait_for_function("() => document.querySelector('[data-sync=\"pages\"]').textContent === '30'")
    assert page.locator('[data-sync="objects"]').inner_text() == "2954 of 6000"
    assert page.locator('[data-sync="left"]').inner_text() not in ("", "-")
    # The agreements inline no longer makes the page 1,891 px wide.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=str(SCREENSHOTS / "staff-partner-page.png"), full_page=True)

    SyncRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now())
    page.wait_for_function("() => document.getElementById('sync-progress').dataset.active === 'false'")
    assert page.locator('[data-sync="headline"]').inner_text() == "Latest: full sync succeeded"
    assert page.locator("svg.feed-chart rect.rejects").count() == 30
    assert csp_errors == []
