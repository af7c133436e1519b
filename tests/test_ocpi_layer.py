"""The shared OCPI wire layer against a real partner server: envelope, retries, pages, errors."""

import pytest

from roaming.ocpi.client import OcpiClient, OcpiClientError
from roaming.ocpi.credentials import authorization_header, tokens_in_header
from roaming.ocpi.envelope import OcpiError, format_datetime, parse_datetime
from tests.ocpi_peer import PeerResponse, ok


def test_datetime_accepts_zone_less_and_fractions_and_writes_z():
    assert format_datetime(parse_datetime("2015-06-29T20:39:09")) == "2015-06-29T20:39:09Z"
    assert format_datetime(parse_datetime("2015-06-29T20:39:09.123456789Z")) == "2015-06-29T20:39:09.123Z"
    with pytest.raises(OcpiError) as error:
        parse_datetime("29/06/2015", "last_updated")
    assert error.value.status_code == 2001 and "last_updated" in error.value.message


def test_authorization_header_base64_and_raw_both_understood():
    assert tokens_in_header(authorization_header("abc-123"))[0] == "abc-123"
    assert "abc-123" in tokens_in_header(authorization_header("abc-123", raw=True))
    assert tokens_in_header("Bearer abc") == []


def test_client_follows_link_headers_as_given(ocpi_peer):
    ocpi_peer.route("GET", "/list", lambda r: ok([1, 2], Link=f'<{ocpi_peer.url("/elsewhere?page=2")}>; rel="next"'))
    ocpi_peer.route("GET", "/elsewhere", lambda r: ok([3]))
    client = OcpiClient("token", retries=0, timeout=2)
    pages = [reply.data for reply in client.pages(ocpi_peer.url("/list"))]
    assert pages == [[1, 2], [3]]
    assert ocpi_peer.requests[0].header("Authorization") == authorization_header("token")


def test_client_retries_server_errors_then_gives_up(ocpi_peer):
    ocpi_peer.route("GET", "/flaky", lambda r: PeerResponse(raw=b"<html>oops</html>", status=502))
    client = OcpiClient("token", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(OcpiClientError) as error:
        client.get(ocpi_peer.url("/flaky"))
    assert error.value.kind == "http" and error.value.http_status == 502
    assert len(ocpi_peer.requests) == 3


def test_client_reports_garbage_and_ocpi_errors(ocpi_peer):
    ocpi_peer.route("GET", "/garbage", lambda r: PeerResponse(raw=b"not json"))
    ocpi_peer.route("GET", "/refused", lambda r: PeerResponse({"status_code": 2001, "status_message": "bad"}))
    client = OcpiClient("token", retries=0, timeout=2)
    with pytest.raises(OcpiClientError) as garbage:
        client.get(ocpi_peer.url("/garbage"))
    assert garbage.value.kind == "json"
    with pytest.raises(OcpiClientError) as refused:
        client.get(ocpi_peer.url("/refused"))
    assert refused.value.kind == "status" and refused.value.status_code == 2001


def test_client_times_out_on_a_stalled_partner(ocpi_peer):
    import time

    ocpi_peer.route("GET", "/slow", lambda r: (time.sleep(1.5), ok([]))[1])
    client = OcpiClient("token", retries=0, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(OcpiClientError) as error:
        client.get(ocpi_peer.url("/slow"))
    assert error.value.kind == "transport"
    assert time.monotonic() - started < 1.2
