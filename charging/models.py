"""Charging sessions, CDRs and remote commands (see issue 7)."""
