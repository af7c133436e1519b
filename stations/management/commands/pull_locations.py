"""`manage.py pull_locations NL*ALL [--full]`: a partner's location feed, now, with a progress bar."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from roaming.models import PartnerConnection
from stations import feeds


def find_connection(party: str) -> PartnerConnection:
    """A connection by party code (NL*ALL, NL-ALL, NLALL), party name, or connection id."""
    text = party.strip()
    connections = PartnerConnection.objects.select_related("party")
    code = text.replace("*", "").replace("-", "").upper()
    if len(code) == 5:
        found = connections.filter(party__country_code=code[:2], party__party_id=code[2:]).first()
        if found:
            return found
    found = connections.filter(party__name__iexact=text).first()
    if found:
        return found
    if text.isdigit() and (found := connections.filter(pk=int(text)).first()):
        return found
    raise CommandError(f"No partner connection for {party!r} (use the party code, e.g. NL*ALL, or its name)")


class Command(BaseCommand):
    help = "Pull a partner's OCPI locations now (incremental unless --full)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("party", help="Party code (NL*ALL), party name, or connection id")
        parser.add_argument("--full", action="store_true", help="Full sync: locations missing are marked removed")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, cron)")

    def handle(self, *args, party: str, full: bool, no_progress: bool, **options) -> None:
        connection = find_connection(party)
        bar = tqdm(unit="loc", disable=no_progress, file=self.stderr._out, dynamic_ncols=True)

        def on_page(run, total):
            if total is not None and bar.total != total:
                bar.total = total
            done = run.created + run.updated + run.unchanged + run.rejected + run.skipped
            bar.update(done - bar.n)
            bar.set_postfix(pages=run.pages, new=run.created, changed=run.updated, rejected=run.rejected)

        try:
            run = feeds.pull_locations(connection.pk, full=full, on_page=on_page)
        except (feeds.PullBusy, feeds.PullNotPossible) as error:
            raise CommandError(str(error)) from error
        finally:
            bar.close()
        self.stdout.write(
            f"{run.get_status_display()}: {run.pages} pages, {run.created} created, {run.updated} updated, "
            f"{run.unchanged} unchanged, {run.removed} removed, {run.rejected} rejected, {run.skipped} skipped"
        )
        if run.status != run.Status.SUCCEEDED:
            raise CommandError(f"Pull failed: {run.error}")
