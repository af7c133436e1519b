"""The partner data-quality page in headless Chromium: the chart draws one bar per partner, worst first."""

from __future__ import annotations

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
