"""A process that should take the CPU only after the others of its machine (docs/scaling.md, "Two pools")."""

from __future__ import annotations

import os


def yield_cpu(amount: int) -> None:
    """Lower this process's CPU priority by `amount` (its children and threads inherit it)."""
    os.nice(amount)
    # Linux shares the CPU between sessions first (autogroups) and applies a process's nice only inside its own
    # session: a server or worker leading a session of its own (as a service manager starts it) nices its group
    # too. Never the group of a session it does not lead: that would nice the shell that started it.
    if os.getsid(0) != os.getpid():
        return
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(amount))
    except OSError:  # no autogroups here (or not allowed): the process nice above is all there is
        pass
