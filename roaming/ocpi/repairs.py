"""Repairs: what we fixed in a partner's object instead of refusing it, counted per partner for staff.

"Be exact in what we send and generous in what we accept": a receiver that keeps an object after fixing a
cosmetic fault (an enum in lower case, a number sent as text, text longer than our column) notes the fix here
with a kind and a small example. Notes are gathered in memory (one object's in a list, a page's or a push's in a
`RepairTally`) and written in one statement per page, so a 550,000-location pull pays one upsert per page of
1,000 and a page without repairs pays nothing.

Any receiver can use it: call `note(notes, kind, where, sent, kept)` while checking an object, then
`tally.add(party_id, notes)` once per object and `tally.save()` once per page or request.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection as db
from django.utils import timezone

# What staff read on the data-quality page for each kind (kinds not listed are shown as they are).
KIND_LABELS = {
    "enum_case": "enum value in other case or with spaces",
    "number_as_text": "number sent as text",
    "text_as_number": "id or text sent as a number",
    "text_truncated": "text longer than our column (truncated)",
    "country_derived": "country missing (derived from country_code)",
    "country_alpha2": "country as a 2-letter code (made ISO alpha-3)",
    "last_updated_derived": "last_updated missing (derived)",
    "voltage_or_amperage_derived": "max_voltage or max_amperage missing (derived from power)",
    "voltage_or_amperage_missing": "max_voltage and max_amperage missing (power kept)",
    "power_implausible": "max_electric_power implausible (derived value kept)",
    "line_to_line_voltage": "3-phase voltage given line-to-line (power derived with 230 V)",
    "evse_rejected": "invalid EVSE rejected, location kept",
}
EXAMPLE_TEXT_LIMIT = 80  # characters of a sent or kept value shown in an example


@dataclass(slots=True)
class Repair:
    kind: str
    example: dict[str, Any]


def _shown(value: Any) -> Any:
    """A value as an example shows it: short, and storable in jsonb (the parser has already checked it)."""
    if isinstance(value, str) and len(value) > EXAMPLE_TEXT_LIMIT:
        return value[: EXAMPLE_TEXT_LIMIT - 3] + "..."
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= EXAMPLE_TEXT_LIMIT else text[: EXAMPLE_TEXT_LIMIT - 3] + "..."
    return value


def note(notes: list[Repair], kind: str, where: str, sent: Any, kept: Any, **more: Any) -> None:
    """Note one repair of an object: which field (`where`), what the partner sent and what we kept."""
    example = {"field": where, "sent": _shown(sent), "kept": _shown(kept)}
    example.update((name, _shown(value)) for name, value in more.items())
    notes.append(Repair(kind, example))


class RepairTally:
    """Repairs of many objects (a feed page, or one push), per owning party and kind, written in one statement.

    `channel` says how the objects came ("pull" or "push"); `module` which OCPI module ("locations", ...).
    """

    def __init__(self, module: str, channel: str) -> None:
        self.module = module
        self.channel = channel
        self.repaired_objects = 0
        self.counts: dict[tuple[int, str], list] = {}  # (party pk, kind) -> [objects, example]

    def add(self, party_id: int, notes: list[Repair], object_id: str = "") -> bool:
        """Count one object's repairs (each kind once per object); True when it had any."""
        if not notes:
            return False
        self.repaired_objects += 1
        seen: set[str] = set()
        for repair in notes:
            if repair.kind in seen:
                continue
            seen.add(repair.kind)
            entry = self.counts.get((party_id, repair.kind))
            example = {"object": object_id, **repair.example}
            if entry is None:
                self.counts[(party_id, repair.kind)] = [1, example]
            else:
                entry[0] += 1
        return True

    def save(self, today: dt.date | None = None) -> None:
        """Add the counts to each party's daily rows (one upsert), and start again from zero."""
        if not self.counts:
            return
        today = today or timezone.localdate()
        jsonb = "::jsonb" if db.vendor == "postgresql" else ""
        rows = sorted(self.counts.items())  # a stable order: concurrent writers lock rows in the same order
        values = ", ".join([f"(%s, %s, %s, %s, %s, %s, %s{jsonb})"] * len(rows))
        params: list[Any] = []
        for (party_id, kind), (count, example) in rows:
            params += [party_id, self.module, self.channel, today, kind, count, json.dumps(example)]
        columns = "(party_id, module, channel, day, kind, repaired, example)"
        sql = (
            f"INSERT INTO roaming_repaircount {columns} VALUES {values}"  # noqa: S608 (only placeholders)
            " ON CONFLICT (party_id, module, channel, day, kind) DO UPDATE SET "
            "repaired = roaming_repaircount.repaired + excluded.repaired, example = excluded.example"
        )
        with db.cursor() as cursor:
            cursor.execute(sql, params)
        self.counts.clear()
