"""Place search across languages and without accents (offline gazetteer), then stations by name, postal code or
operator; every result says what it is."""

from __future__ import annotations

import pytest

from roaming.models import RoamingAgreement
from stations.places import fold, gazetteer
from tests.factories import MapLocationFactory, PartyFactory, RoamingAgreementFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def stations():
    allego = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    fastned = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Fastned"
    ).partner
    made = {
        # Our data spells the cities as the partner does: "Brussel", "Liège".
        "grand_place": MapLocationFactory(party=allego, name="Grand-Place", city="Brussel", postal_code="1000",
                                          latitude=50.8467, longitude=4.3525),
        "midi": MapLocationFactory(party=fastned, name="Gare du Midi", city="Brussel", postal_code="1060",
                                   latitude=50.8357, longitude=4.3365),
        "guillemins": MapLocationFactory(party=allego, name="Guillemins", city="Liège", postal_code="4000",
                                         latitude=50.6245, longitude=5.5668),
        "bastille": MapLocationFactory(party=fastned, name="Bastille", city="Paris", postal_code="75011",
                                       latitude=48.8532, longitude=2.3691),
    }  # fmt: skip
    MapLocationFactory(
        party=PartyFactory(name="No agreement"), name="Grand-Place bis", latitude=50.8468, longitude=4.3526
    )
    return made


def search(client, q: str) -> list[dict]:
    response = client.get("/api/v1/stations/search", {"q": q})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_folding_drops_accents_case_and_punctuation():
    assert fold("Liège") == fold("LIEGE") == "liege"
    assert fold("Köln") == "koln" and fold("Straße") == "strasse" and fold("'s-Hertogenbosch") == "s hertogenbosch"


@pytest.mark.parametrize(
    ("query", "city", "what"),
    [
        ("Brussels", "Brussels", "City in Belgium"),
        ("Bruxelles", "Brussels", "City in Belgium"),
        ("brussel", "Brussels", "City in Belgium"),
        ("Liege", "Liège", "City in Belgium"),
        ("Luik", "Liège", "City in Belgium"),
        ("Lüttich", "Liège", "City in Belgium"),
        ("Paris", "Paris", "City in France"),
        ("Munchen", "Munich", "City in Germany"),
    ],
)
def test_a_town_is_found_in_any_language_without_accents(client, stations, query, city, what):
    first = search(client, query)[0]
    assert first["kind"] == "place" and first["what"] == what
    assert first["label"].startswith(city)


def test_place_results_count_the_stations_there_and_say_which_name_matched(client, stations):
    brussels = search(client, "Bruxelles")[0]
    assert brussels["label"] == "Brussels (Bruxelles)"
    assert brussels["stations"] == 2  # within 10 km; the station without agreement is not counted
    assert abs(brussels["lat"] - 50.85) < 0.1 and abs(brussels["lon"] - 4.35) < 0.1
    assert search(client, "Liege")[0]["stations"] == 1
    # A European town only: Paris, Texas is not offered.
    assert all("United States" not in r.get("what", "") for r in search(client, "Paris"))


def test_stations_by_name_postal_code_and_operator_each_say_what_they_are(client, stations):
    by_name = [r for r in search(client, "Guillem") if r["kind"] == "station"]
    assert by_name == [
        {"kind": "station", "what": "Station", "id": stations["guillemins"].pk, "label": "Guillemins, 4000 Liège",
         "lat": 50.6245, "lon": 5.5668},
    ]  # fmt: skip
    by_postal_code = search(client, "1060")
    assert by_postal_code[0] == {
        "kind": "place", "what": "Postal code", "label": "1060 Brussel", "stations": 1, "lat": 50.8357, "lon": 4.3365,
    }  # fmt: skip
    assert {r["id"] for r in by_postal_code if r["kind"] == "station"} == {stations["midi"].pk}
    operator = [r for r in search(client, "fastn") if r["kind"] == "operator"]
    assert operator == [
        {"kind": "operator", "what": "Operator", "label": "Fastned", "operator": stations["midi"].party.ocpi_id,
         "lat": None, "lon": None},
    ]  # fmt: skip
    # An operator whose cards we have no agreement with is never offered.
    assert not [r for r in search(client, "No agree") if r["kind"] == "operator"]
    # Stations of an operator without agreement are never found.
    assert {r.get("id") for r in search(client, "Grand-Place")} >= {stations["grand_place"].pk}
    assert "Grand-Place bis" not in str(search(client, "Grand-Place"))


def test_bad_queries_get_a_400_naming_q(client):
    for params in ({}, {"q": "x"}, {"q": "x" * 61}):
        response = client.get("/api/v1/stations/search", params)
        assert response.status_code == 400 and "q" in response.json()


def test_the_gazetteer_keeps_latin_names_of_european_places_only():
    places = gazetteer()
    names = {place.country_code for place in places.places}
    assert {"BE", "NL", "FR", "DE", "PL"} <= names and "US" not in names
    assert all(key.isascii() for key in places.keys[:5000])
    assert places.search("x") == []  # one letter: nothing
