"""Our own tariffs as CPO: staff manage them in the admin (with a preview of typical sessions), our Tariffs SENDER
pages them with date_from/date_to, and each change is pushed (PUT, DELETE) through the outbox to every eMSP whose
cards charge at our stations, until it answers 1000. Everything we send is checked against the spec's Tariff
object (tests/ocpi_tariff_schema.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.utils import timezone

from roaming import outbox
from roaming.models import OutboxMessage, Party, RoamingAgreement
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from stations.models import Connector
from tariffs import services
from tariffs.models import Tariff
from tests.conftest import make_ocpi_partner
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    UserFactory,
)
from tests.ocpi_peer import PeerResponse, ok
from tests.ocpi_tariff_schema import tariff_errors

pytestmark = pytest.mark.django_db

EXAMPLES = Path("/work/shared/ocpi/examples")
OCPI_TOKEN = "emsp-token-tariffs"
SENDER = "/ocpi/cpo/2.2.1/tariffs"


@pytest.fixture(autouse=True)
def _quick(settings):
    settings.OUTBOX_BACKOFF_S = 0
    settings.OUTBOX_PROBE_S = 0


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def our_tariff(tariff_id: str, *, example_name: str = "tariff_10_025kwh_parking_start.json", **changes) -> Tariff:
    """One of our tariffs built from a spec example, stored the way the admin stores it (and pushed)."""
    me = own_party()
    document = {**example(example_name), "country_code": me.country_code, "party_id": me.party_id, "id": tariff_id}
    document["last_updated"] = format_datetime(timezone.now())
    document.update(changes)
    tariff = Tariff(party=me)
    services.save_own_tariff(tariff, document)
    return tariff


@pytest.fixture
def emsp():
    return make_ocpi_partner(country_code="NL", party_id="EMS", role="EMSP", token=OCPI_TOKEN).party


def test_the_schema_checker_accepts_the_spec_examples_and_refuses_departures():
    for path in sorted(EXAMPLES.glob("tariff*.json")):
        errors = tariff_errors(json.loads(path.read_text()))
        assert errors == (
            [] if path.name != "tariff_put_example.json" else ["tariff: 'last_updated' is a required property"]
        )
    bad = example("tariff_1_simple_2hour.json")
    bad["elements"][0]["price_components"][0]["type"] = "time"
    bad["note"] = "ours"
    bad["last_updated"] = "2015-06-29T20:39:09+02:00"
    assert len(tariff_errors(bad)) == 3


def test_the_sender_pages_our_tariffs_with_links_and_date_windows(ocpi, emsp):
    for n in range(5):
        our_tariff(f"T{n}")
    partner_tariff = Tariff.objects.create(
        party=PartyFactory(), ocpi_id="NOT-OURS", currency="EUR", last_updated=timezone.now(), document={}
    )

    first = ocpi("GET", SENDER, limit="2")
    assert first.status_code == 200 and first.json()["status_code"] == 1000
    assert (first["X-Total-Count"], first["X-Limit"]) == ("5", "100")
    seen = [t["id"] for t in first.data]
    url = first["Link"].split(";")[0].strip("<>")
    while url:
        page = ocpi("GET", url)
        seen += [t["id"] for t in page.data]
        url = page["Link"].split(";")[0].strip("<>") if page.has_header("Link") else None
    assert seen == ["T0", "T1", "T2", "T3", "T4"] and partner_tariff.ocpi_id not in seen

    everything = ocpi("GET", SENDER).data
    for document in everything:
        assert tariff_errors(document) == [], document
    middle = Tariff.objects.get(ocpi_id="T2").last_updated
    window = ocpi(
        "GET",
        SENDER,
        date_from=format_datetime(middle),
        date_to=format_datetime(Tariff.objects.get(ocpi_id="T4").last_updated),
    )
    assert [t["id"] for t in window.data] == ["T2", "T3"] and window["X-Total-Count"] == "2"
    bad = ocpi("GET", SENDER, date_from="yesterday")
    assert bad.status_code == 400 and bad.json()["status_message"].startswith("date_from")


def test_the_sender_list_costs_the_same_queries_for_any_page_size(ocpi, emsp, django_assert_max_num_queries):
    for n in range(30):
        our_tariff(f"T{n:02d}")
    ocpi("GET", SENDER, limit="1")  # the partner's connection and agreements are cached after a first call
    with django_assert_max_num_queries(4):  # own party, the page, the count (+ the change counter's check)
        small = ocpi("GET", SENDER, limit="1")
    with django_assert_max_num_queries(4):
        large = ocpi("GET", SENDER, limit="100")
    assert len(small.data) == 1 and len(large.data) == 30


def test_nobody_without_an_agreement_reads_our_tariffs(ocpi):
    make_ocpi_partner(country_code="NL", party_id="NOA", role="EMSP", token="no-agreement", agreement=False)
    assert ocpi("GET", SENDER, token="no-agreement").status_code == 403


# --- pushes ------------------------------------------------------------------------------------------------------


class TariffReceiver:
    """An eMSP's Tariffs RECEIVER on the peer: keeps what it gets, can be down."""

    def __init__(self, peer, path: str):
        self.tariffs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.down = False
        peer.route("PUT", rf"{path}/(?P<cc>[^/]+)/(?P<pid>[^/]+)/(?P<tid>[^/]+)", self.put)
        peer.route("DELETE", rf"{path}/(?P<cc>[^/]+)/(?P<pid>[^/]+)/(?P<tid>[^/]+)", self.delete)

    def put(self, request):
        if self.down:
            return PeerResponse(raw=b"maintenance", status=503)
        key = "/".join(request.match.group("cc", "pid", "tid"))
        self.calls.append(("PUT", key))
        self.tariffs[key] = request.json()
        return ok()

    def delete(self, request):
        if self.down:
            return PeerResponse(raw=b"maintenance", status=503)
        key = "/".join(request.match.group("cc", "pid", "tid"))
        self.calls.append(("DELETE", key))
        self.tariffs.pop(key, None)
        return ok()


def emsp_with_receiver(
    peer, party_id: str, *, direction=RoamingAgreement.Direction.BOTH, role=Party.Role.EMSP, modules=("tariffs",)
):
    party = PartyFactory(country_code="NL", party_id=party_id, role=role, name=f"eMSP {party_id}")
    PartnerConnectionFactory(
        party=party,
        endpoints=[
            {"identifier": module, "role": "RECEIVER", "url": peer.url(f"/{party_id}/{module}")} for module in modules
        ],
        tokens__to_them=f"to-{party_id}",
    )
    if direction:
        RoamingAgreementFactory(partner=party, direction=direction)
    return party


def test_each_change_of_ours_reaches_every_emsp_whose_cards_charge_here_until_delivered(ocpi_peer):
    served = emsp_with_receiver(ocpi_peer, "SRV", direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    receiver = TariffReceiver(ocpi_peer, "/SRV/tariffs")
    emsp_with_receiver(ocpi_peer, "OUR", direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    emsp_with_receiver(ocpi_peer, "NON", direction=None)
    other = TariffReceiver(ocpi_peer, "/OUR/tariffs")
    TariffReceiver(ocpi_peer, "/NON/tariffs")
    receiver.down = True

    tariff = our_tariff("AC-1")
    assert OutboxMessage.objects.filter(module="tariffs").count() == 1  # only the eMSP whose cards charge here
    assert outbox.deliver(served.pk).status == "down"
    receiver.down = False
    assert outbox.deliver(served.pk).delivered == 1

    key = f"{tariff.party.country_code}/{tariff.party.party_id}/AC-1"
    assert receiver.tariffs[key] == tariff.document and tariff_errors(receiver.tariffs[key]) == []
    changed = copy.deepcopy(tariff.document)
    changed["elements"][0]["price_components"][1]["price"] = 0.3
    services.save_own_tariff(tariff, changed)
    services.save_own_tariff(tariff, {**changed, "type": "REGULAR"})  # a second change before the first is sent
    outbox.deliver(served.pk)
    assert receiver.calls == [("PUT", key), ("PUT", key)]  # only the latest version went
    assert receiver.tariffs[key]["type"] == "REGULAR" and tariff_errors(receiver.tariffs[key]) == []

    services.delete_own_tariff(tariff)
    outbox.deliver(served.pk)
    assert receiver.calls[-1] == ("DELETE", key) and key not in receiver.tariffs
    assert other.calls == [] and not Tariff.objects.exists()


def test_a_hub_gets_one_copy_for_its_clients(ocpi_peer):
    hub = emsp_with_receiver(ocpi_peer, "HUB", role=Party.Role.HUB)
    receiver = TariffReceiver(ocpi_peer, "/HUB/tariffs")
    our_tariff("DC-1")
    outbox.deliver(hub.pk)
    assert receiver.calls == [("PUT", f"{own_party().country_code}/{own_party().party_id}/DC-1")]


# --- the staff admin ---------------------------------------------------------------------------------------------


ELEMENTS = [
    {"price_components": [{"type": "FLAT", "price": 1, "vat": 21, "step_size": 1}]},
    {"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 21, "step_size": 1}]},
]


def test_staff_create_our_tariff_attach_it_to_connectors_and_see_a_preview(client, ocpi_peer):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    served = emsp_with_receiver(ocpi_peer, "SRV", modules=("tariffs", "locations"))
    receiver = TariffReceiver(ocpi_peer, "/SRV/tariffs")
    evses = []
    ocpi_peer.route("PUT", r"/SRV/locations/.*", lambda request: evses.append((request.path, request.json())) or ok())
    ours = LocationFactory(party=own_party(), name="Our station")
    connector = ConnectorFactory(evse=EVSEFactory(location=ours))
    form = {
        "ocpi_id": "MBP-AC",
        "currency": "EUR",
        "type": "REGULAR",
        "elements": json.dumps(ELEMENTS),
        "tariff_alt_text": json.dumps([{"language": "nl", "text": "€0,36/kWh + €1,21 start"}]),
        "tariff_alt_url": "",
        "max_price_excl_vat": "20",
        "connectors": [connector.pk],
    }

    response = client.post("/admin/tariffs/owntariff/add/", form, follow=True)

    assert response.status_code == 200
    assert "saved and pushed to 1 eMSP(s); connectors: 1 attached" in response.content.decode()
    tariff = Tariff.objects.get(ocpi_id="MBP-AC")
    assert tariff_errors(tariff.document) == []
    assert Tariff.history.filter(ocpi_id="MBP-AC").count() == 1  # its versions are kept (CDR checks read them)
    assert tariff.document["max_price"] == {"excl_vat": 20.0}
    connector.refresh_from_db()
    assert connector.tariff_ids == ["MBP-AC"]
    outbox.deliver(served.pk)
    assert receiver.calls == [("PUT", "BE/MBP/MBP-AC")]
    # The EVSE naming it follows the tariff (a Locations receiver may refuse a tariff id it does not know yet).
    [(path, evse)] = evses
    assert path == f"/SRV/locations/BE/MBP/{ours.ocpi_id}/{connector.evse.uid}"
    assert evse["connectors"][0]["tariff_ids"] == ["MBP-AC"]
    tariff_put, evse_put = OutboxMessage.objects.filter(partner=served).order_by("pk")
    assert (tariff_put.module, evse_put.module) == ("tariffs", "locations")

    page = client.get(f"/admin/tariffs/owntariff/{tariff.pk}/change/").content.decode()
    # 20 kWh at 22 kW: €1 + 20 x €0.30 = €7.00 excl. VAT, €8.47 incl. 21 % VAT.
    assert "20 kWh at 22 kW (AC)" in page and "€7.00" in page and "€8.47" in page
    # 60 kWh: €1 + €18 = €19 excl. VAT, under the €20 maximum; incl. VAT €22.99.
    assert "€19.00" in page


def test_staff_get_the_field_named_when_a_tariff_is_wrong(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    bad = [{"price_components": [{"type": "ENERGY", "price": -1, "step_size": 1}]}]
    response = client.post(
        "/admin/tariffs/owntariff/add/", {"ocpi_id": "X", "currency": "EUR", "elements": json.dumps(bad)}
    )
    assert response.status_code == 200  # the form again, with the error
    assert "elements[0].price_components[0].price: must be at least 0" in response.content.decode()
    assert not Tariff.objects.exists() and not OutboxMessage.objects.exists()


def test_partners_tariffs_are_read_only_for_staff(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    party = PartyFactory(name="Allego")
    document = {**example("tariff_9_025kwh_start.json"), "country_code": party.country_code, "party_id": party.party_id}
    services.store_partner_tariff(party, "17", document, source=None)
    listing = client.get("/admin/tariffs/tariff/").content.decode()
    # The price in words, incl. VAT: €0.50 + 20 % start, €0.25 + 10 % per kWh.
    assert "Allego" in listing and "€0.60 start · €0.275/kWh" in listing
    assert client.get("/admin/tariffs/tariff/add/").status_code == 403
    tariff = Tariff.objects.get()
    assert client.post(f"/admin/tariffs/tariff/{tariff.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Connector.objects.count() == 0


# --- our own sessions and CDRs, priced with our tariff ----------------------------------------------------------


def test_sessions_and_cdrs_at_our_stations_are_priced_with_our_tariff(client, ocpi_peer, settings):
    from charging.models import CDR
    from tests.cpo_world import BACKEND_TOKEN, EmspReceivers, at, call_backend, foreign_emsp, foreign_token, our_station

    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN
    evse = our_station()
    elements = [
        {"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 21, "step_size": 1}]},
        {"price_components": [{"type": "PARKING_TIME", "price": 6.00, "vat": 21, "step_size": 60}]},
    ]
    our_tariff("MBP-AC", elements=elements)
    evse.connectors.update(tariff_ids=["MBP-AC"])
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")

    start = {"session_id": "TX-1", "location_id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "started_at": at(0)}
    assert call_backend(client, "/sessions", {**start, "token_uid": "0102AABB"}).status_code == 201
    for minute, kwh in ((15, "5.0"), (30, "11.2")):
        call_backend(client, "/sessions/TX-1/meter-values", {"at": at(minute), "kwh": kwh, "power_kw": 22})
    assert call_backend(client, "/sessions/TX-1/end", {"ended_at": at(45), "kwh": "11.2"}).status_code == 200
    outbox.deliver(emsp.pk)

    cdr = CDR.objects.get()
    sent = receivers.cdrs[cdr.ocpi_id]
    # 11.2 kWh x €0.30 = €3.36; full at minute 30, parked 15 min x €6/h = €1.50: €4.86, + 21 % VAT = €5.88.
    assert sent["total_cost"] == {"excl_vat": 4.86, "incl_vat": 5.88}
    assert {p["tariff_id"] for p in sent["charging_periods"]} == {"MBP-AC"}
    assert [d["type"] for d in sent["charging_periods"][-1]["dimensions"]] == ["PARKING_TIME"]
    assert receivers.sessions["TX-1"]["total_cost"] == {"excl_vat": 4.86, "incl_vat": 5.88}
