"""Who may touch a partner object: the one rule every OCPI receiver applies (locations, tokens, sessions,
CDRs, command results).

An object belongs to the party named by its `country_code`/`party_id` (in the URL, or in the body where the
URL names none, as for a CDR). The caller may touch it when that party is:
- the party the call is attributed to (the caller itself, or the hub client its OCPI-from-* headers name);
- a hub calling without routing headers: any client it may act for now (`roaming.selectors.hub_client_for_writes`:
  attached to this hub, not suspended or disconnected, agreement in force through this hub);
and never MobilityPlus itself. Anything else is HTTP 403 with OCPI 2000, and nothing is read or stored.
"""

from __future__ import annotations

from roaming.models import Party
from roaming.ocpi.endpoint import PartnerContext
from roaming.ocpi.envelope import CLIENT_ERROR, OcpiError
from roaming.selectors import hub_client_for_writes, is_our_party


def check_owner(ctx: PartnerContext, country_code: str, party_id: str) -> Party:
    """The party owning objects under `country_code`/`party_id`, if the caller may touch them; 403 otherwise."""
    country_code, party_id = country_code.strip().upper(), party_id.strip().upper()
    if is_our_party(country_code, party_id) or ctx.party.is_self:
        raise OcpiError(CLIENT_ERROR, f"Nobody may touch objects of {country_code}*{party_id}: that is us", 403)
    if (ctx.party.country_code, ctx.party.party_id) == (country_code, party_id):
        return ctx.party
    caller = ctx.connection.party
    # A hub's routing headers say whom this message is from; without them it may act for any client it may.
    if caller.role == Party.Role.HUB and ctx.party.pk == caller.pk:
        client = hub_client_for_writes(ctx.connection, country_code, party_id)
        if client is not None:
            return client.party
    raise OcpiError(
        CLIENT_ERROR, f"You may only touch objects of {ctx.party.ocpi_id}, not {country_code}*{party_id}", 403
    )


def may_touch(ctx: PartnerContext, party: Party) -> bool:
    """Whether the caller may touch objects of `party` (for objects found by our own key, answered 404 when not)."""
    try:
        return check_owner(ctx, party.country_code, party.party_id).pk == party.pk
    except OcpiError:
        return False
