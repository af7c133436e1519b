"""Whose objects a partner's feed may carry (its locations, its tariffs): one rule for every feed we pull."""

from __future__ import annotations

from roaming.models import PartnerConnection, Party
from roaming.selectors import party_ids_a_hub_feed_may_carry


class ForeignObject(ValueError):
    """A CPO's own feed carried another party's object."""


class FeedOwners:
    """Resolves an object's own country code and party id to the Party we store it under.

    A hub's feed holds many CPOs: only those staff confirmed through that hub (an agreement in force through it,
    taking our cards) are kept; anyone else's objects, ours and those of parties we reach another way included,
    are skipped. A CPO's own feed may only carry its own objects.
    """

    def __init__(self, connection: PartnerConnection):
        self.is_hub = connection.party.role == Party.Role.HUB
        self.own = (connection.party.country_code, connection.party.party_id)
        if self.is_hub:
            parties = Party.objects.filter(pk__in=party_ids_a_hub_feed_may_carry(connection))
        else:
            parties = [connection.party]
        self.by_code = {(party.country_code, party.party_id): party for party in parties}

    def resolve(self, country_code: str, party_id: str) -> Party | None:
        """The owner to store the object under; None when it is skipped; ForeignObject when not allowed."""
        key = (country_code, party_id)
        if self.is_hub:
            return self.by_code.get(key)
        if key != self.own:
            raise ForeignObject(
                f"country_code/party_id: {key[0]}*{key[1]} is not the sending party {self.own[0]}*{self.own[1]}"
            )
        return self.by_code[key]
