"""The lock now says who may use a station: stored reasons that no longer lock are dropped.

`parking_ev_only` (a bay kept for electric vehicles) is now information in the panel and `opening_hours` its
own cue; the other stored codes are computed exactly as before, so dropping these two from each row and
setting `limited_access` from what is left is the new rule applied to the stored rows. Feeds skip unchanged
locations, so without this the old locks would stay until a partner changed the location.

Only the rows carrying one of the two codes are written: on PostgreSQL in one statement (the reasons are
jsonb; `location_map_visible` carries `limited_access` and is updated with the rows, no rebuild). Cluster
counts (`stations.MapCell`) follow at the next cells refresh (at most `MAP_CELLS_MAX_AGE_SECONDS`).
"""

from django.db import migrations

DROPPED = ["parking_ev_only", "opening_hours"]

POSTGRESQL = """
UPDATE stations_location AS location
SET limited_access_reasons = kept.reasons, limited_access = jsonb_array_length(kept.reasons) > 0
FROM (
    SELECT id, COALESCE(
        (SELECT jsonb_agg(reason ORDER BY position)
           FROM jsonb_array_elements(limited_access_reasons) WITH ORDINALITY AS element(reason, position)
          WHERE NOT (reason <@ '["parking_ev_only", "opening_hours"]'::jsonb)),
        '[]'::jsonb
    ) AS reasons
    FROM stations_location
    WHERE limited_access_reasons ?| array['parking_ev_only', 'opening_hours']
) AS kept
WHERE location.id = kept.id
"""


def drop_reasons_that_no_longer_lock(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL)
    else:
        drop_row_by_row(apps.get_model("stations", "Location"))


def drop_row_by_row(Location) -> None:
    """Elsewhere (the embedded SQLite database): the same change, read in Python and written in batches."""
    changed = []
    for pk, reasons in Location.objects.exclude(limited_access_reasons=[]).values_list("pk", "limited_access_reasons"):
        if isinstance(reasons, list) and any(code in DROPPED for code in reasons):
            kept = [code for code in reasons if code not in DROPPED]
            changed.append(Location(pk=pk, limited_access_reasons=kept, limited_access=bool(kept)))
    Location.objects.bulk_update(changed, ["limited_access_reasons", "limited_access"], batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [("stations", "0007_location_published_to_our_drivers")]

    # Not undone: the dropped codes cannot be told from the rows; the former code sets them again as it writes.
    operations = [migrations.RunPython(drop_reasons_that_no_longer_lock, migrations.RunPython.noop)]
