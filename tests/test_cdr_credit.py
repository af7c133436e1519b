"""Staff correct a wrong CDR of our stations with a credit CDR and a new one (OCPI 2.2.1); CDRs are never edited.

The credit CDR: a new id, `credit: true`, `credit_reference_id` = the original's id, negative costs. Both go to the
driver's eMSP, a loopback OCPI server whose receiver checks them with our own eMSP receiver's serializer.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from charging import cpo_delivery
from charging.models import CDR
from roaming import outbox
from tests.cpo_world import (
    BACKEND_TOKEN,
    EmspReceivers,
    at,
    call_backend,
    foreign_emsp,
    foreign_token,
    our_station,
    start_body,
)
from tests.factories import CardFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN
    settings.OUTBOX_BACKOFF_S = 0


@pytest.fixture
def billed(client, ocpi_peer):
    """A foreign driver's session at our station, ended, its CDR delivered to the eMSP: (emsp, receivers, cdr)."""
    our_station()
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    call_backend(client, "/sessions", start_body(token_uid="0102AABB"))
    call_backend(client, "/sessions/TX-1/end", {"ended_at": at(60), "kwh": "20"})
    outbox.deliver(emsp.pk)
    cdr = CDR.objects.get()
    assert list(receivers.cdrs) == [cdr.ocpi_id]
    return emsp, receivers, cdr


def test_credit_and_reissue_reach_the_emsp_and_the_original_stays_as_it_was(billed):
    emsp, receivers, cdr = billed
    original = dict(cdr.raw)
    credit, new = cpo_delivery.credit_cdr(
        cdr,
        corrected={
            "total_energy": Decimal("18.5"),
            "total_cost_excl_vat": Decimal("7.40"),
            "total_cost_incl_vat": None,
        },
        reason="Meter read twice",
    )
    outbox.deliver(emsp.pk)
    assert list(receivers.cdrs) == [cdr.ocpi_id, credit.ocpi_id, new.ocpi_id]
    sent_credit = receivers.cdrs[credit.ocpi_id]
    assert sent_credit["credit"] is True and sent_credit["credit_reference_id"] == cdr.ocpi_id
    assert sent_credit["total_cost"]["excl_vat"] <= 0 and sent_credit["remark"] == "Meter read twice"
    assert sent_credit["id"] != cdr.ocpi_id and len(sent_credit["id"]) <= 39
    sent_new = receivers.cdrs[new.ocpi_id]
    assert sent_new["total_energy"] == 18.5 and sent_new["total_cost"] == {"excl_vat": 7.4}
    assert "credit" not in sent_new and sent_new["session_id"] == "TX-1"
    cdr.refresh_from_db()
    assert cdr.raw == original and cdr.total_energy == Decimal("20")  # never edited
    assert credit.credited_cdr == cdr and CDR.objects.count() == 3


def test_a_cdr_is_credited_once_and_a_credit_is_never_credited(billed):
    _, _, cdr = billed
    credit, new = cpo_delivery.credit_cdr(cdr)
    assert new is None
    with pytest.raises(cpo_delivery.CannotCredit):
        cpo_delivery.credit_cdr(cdr)
    with pytest.raises(cpo_delivery.CannotCredit):
        cpo_delivery.credit_cdr(credit)


def test_our_drivers_history_shows_the_corrected_total(client):
    our_station()
    card = CardFactory(uid="04A1B2C3")
    call_backend(client, "/sessions", start_body(token_uid="04A1B2C3"))
    call_backend(client, "/sessions/TX-1/end", {"ended_at": at(60), "kwh": "20"})
    cpo_delivery.credit_cdr(
        CDR.objects.get(),
        corrected={"total_energy": Decimal("20"), "total_cost_excl_vat": Decimal("5"), "total_cost_incl_vat": None},
    )
    from charging.selectors import history

    assert [row.cost for row in history(card.driver)] == [Decimal("5")]


def test_staff_correct_from_the_admin_and_cannot_edit_or_delete(client, billed):
    emsp, receivers, cdr = billed
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get(f"/admin/charging/cdr/{cdr.pk}/change/")
    assert page.status_code == 200
    assert b"Credit and reissue with corrected values" in page.content
    assert b'name="total_energy"' not in page.content  # read-only: no input to edit it
    assert client.post(f"/admin/charging/cdr/{cdr.pk}/delete/").status_code == 403
    form = client.get(f"/admin/charging/cdr/{cdr.pk}/correct/")
    assert form.status_code == 200 and b"credit CDR" in form.content
    refused = client.post(f"/admin/charging/cdr/{cdr.pk}/correct/", {"total_energy": "-1", "reason": "x"})
    assert refused.status_code == 200 and CDR.objects.count() == 1
    done = client.post(
        f"/admin/charging/cdr/{cdr.pk}/correct/",
        {"total_energy": "19", "total_cost_excl_vat": "6.5", "total_cost_incl_vat": "", "reason": "Wrong meter"},
    )
    assert done.status_code == 302
    assert CDR.objects.filter(credit=True, credit_reference_id=cdr.ocpi_id).count() == 1
    assert CDR.objects.filter(credit=False, total_energy=Decimal("19")).count() == 1
    outbox.deliver(emsp.pk)
    assert len(receivers.cdrs) == 3
    shown = client.get(f"/admin/charging/cdr/{cdr.pk}/change/")
    assert ocpi_url(receivers, cdr).encode() in shown.content  # the URL the eMSP answered in Location


def ocpi_url(receivers, cdr) -> str:
    return receivers.peer.url(f"/emsp/cdrs/{cdr.ocpi_id}")


def test_the_list_action_credits_without_replacement(client, billed):
    _, _, cdr = billed
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/charging/cdr/", {"action": "credit_selected", "_selected_action": [cdr.pk]}, follow=True
    )
    assert response.status_code == 200
    assert CDR.objects.filter(credit=True).count() == 1
