"""Our stations as a CPO, for the CPO tests: our station, our backend calling us, a foreign eMSP on a loopback peer.

The eMSP is a real OCPI server on 127.0.0.1 (tests/ocpi_peer.py) whose sessions and cdrs RECEIVERs check what we
send with the same serializers our own eMSP receivers use (every required field, every type), and keep it.
"""

from __future__ import annotations

import datetime as dt

from charging.serializers import CdrSerializer, SessionSerializer
from roaming.models import Party, RoamingAgreement
from roaming.selectors import own_party
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    ForeignTokenFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)
from tests.ocpi_peer import PeerResponse, ok

BACKEND_TOKEN = "central-system-secret"
API = "/api/v1/charge-point"
# Two hours ago (whole minutes): recent enough for the driver's live panel, never in the future for a receiver.
T0 = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=2)


def moment(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def at(minutes: float) -> str:
    return moment(minutes).isoformat().replace("+00:00", "Z")


def our_station(location_id: str = "MBP-GENT", evse_uid: str = "MBP-GENT-1"):
    """One of our EVSEs with a Type 2 connector."""
    location = LocationFactory(party=own_party(), ocpi_id=location_id, name="Gent Sint-Pieters")
    return ConnectorFactory(evse=EVSEFactory(location=location, uid=evse_uid, evse_id="BE*MBP*E1")).evse


def call_backend(client, path: str, body: dict, token: str = BACKEND_TOKEN):
    """Our central system calling the platform (in-process client, bearer token)."""
    return client.post(f"{API}{path}", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def start_body(**changes) -> dict:
    body = {"session_id": "TX-1", "location_id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "started_at": at(0)}
    body.update(changes)
    return body


class EmspReceivers:
    """A foreign eMSP's sessions and cdrs RECEIVERs on the peer: validate, keep, answer like a real one."""

    def __init__(self, peer, path: str = "/emsp"):
        self.peer, self.path = peer, path
        self.sessions: dict[str, dict] = {}
        self.calls: list[tuple[str, str, dict]] = []
        self.cdrs: dict[str, dict] = {}
        self.refuse_cdrs = False
        peer.route("PUT", rf"{path}/sessions/(?P<cc>[^/]+)/(?P<pid>[^/]+)/(?P<sid>[^/]+)", self.put_session)
        peer.route("PATCH", rf"{path}/sessions/(?P<cc>[^/]+)/(?P<pid>[^/]+)/(?P<sid>[^/]+)", self.patch_session)
        peer.route("POST", rf"{path}/cdrs", self.post_cdr)
        peer.route("GET", rf"{path}/cdrs/(?P<cdr_id>[^/]+)", self.get_cdr)

    @staticmethod
    def _invalid(serializer) -> PeerResponse | None:
        if serializer.is_valid():
            return None
        return PeerResponse({"status_code": 2001, "status_message": str(serializer.errors)}, status=400)

    def put_session(self, request):
        body = request.json()
        self.calls.append(("PUT", request.match["sid"], body))
        refused = self._invalid(SessionSerializer(data=body))
        if refused:
            return refused
        self.sessions[request.match["sid"]] = body
        return ok()

    def patch_session(self, request):
        body = request.json()
        self.calls.append(("PATCH", request.match["sid"], body))
        refused = self._invalid(SessionSerializer(data=body, partial=True))
        if refused:
            return refused
        stored = self.sessions.get(request.match["sid"])
        if stored is None:
            return PeerResponse({"status_code": 2001, "status_message": "unknown session"}, status=404)
        periods = stored.get("charging_periods", []) + body.get("charging_periods", [])
        stored.update(body)
        stored["charging_periods"] = periods  # OCPI: a PATCH's charging_periods are appended
        return ok()

    def post_cdr(self, request):
        body = request.json()
        self.calls.append(("POST", body.get("id"), body))
        if self.refuse_cdrs:
            return PeerResponse({"status_code": 2001, "status_message": "unknown token"}, status=400)
        refused = self._invalid(CdrSerializer(data=body))
        if refused:
            return refused
        self.cdrs[body["id"]] = body
        return ok(None, Location=self.peer.url(f"{self.path}/cdrs/{body['id']}"))

    def get_cdr(self, request):
        cdr = self.cdrs.get(request.match["cdr_id"])
        if cdr is None:
            return PeerResponse({"status_code": 2001, "status_message": "unknown CDR"}, status=404)
        return ok(cdr)


def foreign_emsp(peer, *, via_hub: bool = False, path: str = "/emsp", party_id: str = "TNM"):
    """A connected eMSP (directly or through a hub) whose cards charge at our stations, receivers on the peer."""
    endpoints = [
        {"identifier": module, "role": "RECEIVER", "url": peer.url(f"{path}/{module}")}
        for module in ("sessions", "cdrs", "locations", "tariffs")
    ]
    party = PartyFactory(country_code="NL", party_id=party_id, role=Party.Role.EMSP, name="TheNewMotion")
    if via_hub:
        hub = PartyFactory(country_code="DE", party_id="HUB", role=Party.Role.HUB, name="The hub")
        hub_connection = PartnerConnectionFactory(party=hub, endpoints=endpoints, tokens__to_them="to-hub")
        PartnerConnectionFactory(party=party, via_hub=hub_connection)
        RoamingAgreementFactory(
            partner=party, hub=hub, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
        )
    else:
        PartnerConnectionFactory(party=party, endpoints=endpoints, tokens__to_them="to-emsp")
        RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    return party


def foreign_token(party, uid: str = "0102AABB"):
    return ForeignTokenFactory(party=party, uid=uid)
