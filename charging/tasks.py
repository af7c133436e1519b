"""Celery tasks of the charging app: thin wrappers around charging.services."""

from __future__ import annotations

from celery import shared_task

from charging import services


@shared_task(name="charging.send_command", acks_late=False, ignore_result=True)
def send_command(command_id: int) -> str:
    """Send one of our OCPI commands to its CPO (at most once per button press; see services.send_command).

    acks_late is off on purpose: a worker dying mid-send must not make the broker deliver the press again.
    """
    return services.send_command(command_id).status


@shared_task(name="charging.post_command_result", acks_late=False, ignore_result=True)
def post_command_result(command_id: int) -> bool:
    """Post our charge point's CommandResult to the partner's response_url."""
    return services.post_command_result(command_id)


@shared_task(name="charging.send_to_charge_point", acks_late=False, ignore_result=True)
def send_to_charge_point(command_id: int) -> str:
    """Post a command for one of our stations to our central system, once (acks_late off: never twice)."""
    return services.deliver_to_charge_point(command_id).status


@shared_task(name="charging.flush_session_updates", ignore_result=True)
def flush_session_updates() -> int:
    """Periodic: the throttled Session PATCHes to drivers' eMSPs whose interval has passed."""
    from charging.cpo_delivery import flush_session_updates as flush

    return flush()


@shared_task(name="charging.expire_commands")
def expire_commands() -> int:
    """Periodic: commands whose result never came within the CPO's timeout become timed out."""
    return services.expire_overdue_commands()


@shared_task(name="charging.repost_command_results")
def repost_command_results() -> int:
    """Periodic: post the results that could not be queued (broker down) when the charge point reported them."""
    from charging.selectors import results_to_repost

    pending = results_to_repost()
    for command_id in pending:
        post_command_result.delay(command_id)
    return len(pending)
