"""The driver map's filters: validated by django-filter, applied to locations and to cluster cells alike."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from roaming.models import Party
from roaming.selectors import party_ids_accepting_our_cards
from stations.map_cells import POWER_STEPS
from stations.selectors import MapFilters

# OCPI 2.2.1 ConnectorType (plus MCS and SAE_J3400 of 2.3): anything else is an unknown filter value.
CONNECTOR_STANDARDS = [
    ("IEC_62196_T2", "Type 2"),
    ("IEC_62196_T2_COMBO", "CCS (Combo 2)"),
    ("CHADEMO", "CHAdeMO"),
    ("IEC_62196_T1", "Type 1"),
    ("IEC_62196_T1_COMBO", "CCS (Combo 1)"),
    ("TESLA_S", "Tesla"),
    ("TESLA_R", "Tesla Roadster"),
    ("DOMESTIC_F", "Schuko (domestic F)"),
    ("DOMESTIC_E", "Domestic E"),
    ("IEC_62196_T3A", "Type 3A"),
    ("IEC_62196_T3C", "Type 3C"),
    ("IEC_60309_2_single_16", "CEE blue 16 A"),
    ("IEC_60309_2_three_16", "CEE red 16 A"),
    ("IEC_60309_2_three_32", "CEE red 32 A"),
    ("IEC_60309_2_three_64", "CEE red 64 A"),
    ("CHAOJI", "ChaoJi"),
    ("GBT_AC", "GB/T AC"),
    ("GBT_DC", "GB/T DC"),
    ("PANTOGRAPH_BOTTOM_UP", "Pantograph (bottom-up)"),
    ("PANTOGRAPH_TOP_DOWN", "Pantograph (top-down)"),
    ("MCS", "Megawatt (MCS)"),
    ("SAE_J3400", "NACS (SAE J3400)"),
    *[(f"DOMESTIC_{letter}", f"Domestic {letter}") for letter in "ABCDGHIJKLMNOP"],
    *[
        (f"NEMA_{kind}", f"NEMA {kind.replace('_', '-')}")
        for kind in ("5_20", "6_30", "6_50", "10_30", "10_50", "14_30", "14_50")
    ],
]
STANDARD_LABELS = dict(CONNECTOR_STANDARDS)


TRUE_FALSE = [("true", "true"), ("false", "false")]


def as_bool(value: str) -> bool:
    return value == "true"


def operator_choices() -> list[tuple[str, str]]:
    """Operators whose stations take our cards, by OCPI id (CC*PID), for the operator filter."""
    parties = Party.objects.filter(pk__in=party_ids_accepting_our_cards()).order_by("name")
    return [(party.ocpi_id, party.name) for party in parties]


class StationFilter(django_filters.FilterSet):
    """Query filters of the map API; unknown values make the form invalid (400 naming the parameter)."""

    standard = django_filters.MultipleChoiceFilter(
        choices=CONNECTOR_STANDARDS, method="apply", help_text="Connector standard (OCPI ConnectorType); repeatable."
    )
    min_power_kw = django_filters.TypedChoiceFilter(
        choices=[(f"{step:g}", f"{step:g} kW") for step in POWER_STEPS],
        coerce=float,
        method="apply",
        help_text="Minimum maximum power of the station, one of " + ", ".join(f"{s:g}" for s in POWER_STEPS),
    )
    available = django_filters.TypedChoiceFilter(
        choices=TRUE_FALSE, coerce=as_bool, method="apply", help_text="true: only stations with an EVSE available now."
    )
    hide_limited = django_filters.TypedChoiceFilter(
        choices=TRUE_FALSE, coerce=as_bool, method="apply", help_text="true: hide stations with limited accessibility."
    )
    operator = django_filters.MultipleChoiceFilter(
        choices=operator_choices, method="apply", help_text="Operator OCPI id, e.g. NL*ALL; repeatable."
    )

    def apply(self, queryset: QuerySet, name: str, value) -> QuerySet:
        # Every filter is applied at once by filter_queryset, from map_filters().
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(self.map_filters().q())

    def map_filters(self) -> MapFilters:
        data = self.form.cleaned_data
        operators: tuple[int, ...] = ()
        if data.get("operator"):
            wanted = Q()
            for value in data["operator"]:
                country, party_id = value.split("*", 1)
                wanted |= Q(country_code=country, party_id=party_id)
            operators = tuple(Party.objects.filter(wanted).values_list("pk", flat=True))
        return MapFilters(
            standards=tuple(data.get("standard") or ()),
            min_power_kw=data.get("min_power_kw") or 0.0,
            available=bool(data.get("available")),
            hide_limited=bool(data.get("hide_limited")),
            operators=operators,
        )
