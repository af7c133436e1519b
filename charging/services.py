"""Writes about sessions, CDRs and commands: one import point for the charging app's services.

The app is split along its seams; this module re-exports their public names so `from charging import services`
keeps working:

* `charging.sessions`: sessions and CDRs partners' CPOs push to us (eMSP);
* `charging.commands_out`: the commands we send for our drivers (eMSP);
* `charging.commands_in`: the commands partners send to our own stations (CPO);

and, for our stations as a CPO (docs/cpo.md): `charging.backend` (our central system, both ways: the backend API's
writes and the commands we post to it) and `charging.cpo_delivery` (sessions and CDRs to the drivers' eMSPs, credit
CDRs).
"""

from __future__ import annotations

from charging.commands_in import (
    _command_response,
    check_response_url,
    deliver_to_charge_point,
    post_command_result,
    receive_partner_command,
    report_charge_point_result,
    send_to_charge_point,
)
from charging.commands_out import (
    DEFAULT_RESULT_TIMEOUT_S,
    EVSE_STATE_WORDS,
    NOT_QUEUED_TEXT,
    RESULT_STATUS,
    UNUSABLE_EVSE,
    CommandNotQueued,
    CommandRefused,
    _apply_response,
    _finish,
    _not_delivered,
    active_cards,
    charge_point_timeout,
    check_startable,
    command_body,
    command_connect_retries,
    command_http_timeout,
    command_retry_backoff,
    command_send_grace,
    commands_url,
    expire_overdue_commands,
    record_command_result,
    request_start,
    request_stop,
    response_url,
    send_command,
)
from charging.sessions import find_card, patch_session, put_session, store_cdr

__all__ = [
    "DEFAULT_RESULT_TIMEOUT_S",
    "EVSE_STATE_WORDS",
    "NOT_QUEUED_TEXT",
    "RESULT_STATUS",
    "UNUSABLE_EVSE",
    "CommandNotQueued",
    "CommandRefused",
    "_apply_response",
    "_command_response",
    "_finish",
    "_not_delivered",
    "active_cards",
    "charge_point_timeout",
    "check_response_url",
    "check_startable",
    "command_body",
    "command_connect_retries",
    "command_http_timeout",
    "command_retry_backoff",
    "command_send_grace",
    "commands_url",
    "deliver_to_charge_point",
    "expire_overdue_commands",
    "find_card",
    "patch_session",
    "post_command_result",
    "put_session",
    "receive_partner_command",
    "record_command_result",
    "report_charge_point_result",
    "request_start",
    "request_stop",
    "response_url",
    "send_command",
    "send_to_charge_point",
    "store_cdr",
]
