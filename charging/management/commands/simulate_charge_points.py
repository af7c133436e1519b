"""`manage.py simulate_charge_points`: play sessions at our stations through the charge-point backend API."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from charging.simulator import default_plays, http_transport, play, play_in_process


class Command(BaseCommand):
    help = (
        "Play charging sessions at our stations (one of our drivers, one foreign eMSP's driver) through the "
        "charge-point backend API: over HTTP to --url, or in this process."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", help="A running platform, e.g. http://127.0.0.1:8000 (default: in-process).")
        parser.add_argument("--token", help="The backend bearer (default: CARDS_BACKEND_API_TOKEN).")
        parser.add_argument("--prefix", default="SIM", help="Session id prefix (same prefix: no new sessions).")
        parser.add_argument("--samples", type=int, default=4, help="Meter values per session.")
        parser.add_argument("--pause", type=float, default=0.0, help="Seconds between calls (to watch it live).")

    def handle(self, *args, **options) -> None:
        plays = default_plays(options["prefix"])
        if not plays:
            raise CommandError("No EVSE of ours, or no card or foreign token to charge with: run load_demo first.")
        self.stdout.write(f"Playing {len(plays)} session(s):")
        common = {"samples": options["samples"], "pause_s": options["pause"], "log": self.stdout.write}
        if options["url"]:
            token = options["token"] or settings.CARDS_BACKEND_API_TOKEN
            if not token:
                raise CommandError("--token (or CARDS_BACKEND_API_TOKEN) is needed to call a running platform.")
            refused = play(http_transport(options["url"], token), plays, **common)
        else:
            refused = play_in_process(plays, **common)
        if refused:
            raise CommandError(f"{refused} call(s) refused (see above).")
        self.stdout.write(self.style.SUCCESS("Done."))
