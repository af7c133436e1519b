"""A status change rewrites the location's row in place (a HOT update: no index touched).

PostgreSQL writes an updated row without touching any index only when no indexed column changed and the page
has room. The status fast path changes the map summary (`map_status`, `available_evse_count`,
`status_updated_at`): the map's covering index no longer includes them (the map reads them from the row, a
few hundred rows per recomputed view), and a location keeps 15 % of each page free for its new versions.
Before, every status change inserted into all twelve indexes of the table, three of them trigram GIN indexes.
"""

from django.db import migrations

BEFORE = (
    "id, party_id, map_status, status_updated_at, max_power_kw, connector_standards, limited_access, "
    "limited_access_override, evse_count, available_evse_count, name, source_id"
)
AFTER = "id, party_id, max_power_kw, connector_standards, limited_access, limited_access_override, evse_count, name, source_id"


def visible_index(include: str) -> str:
    return (
        "CREATE INDEX IF NOT EXISTS location_map_visible ON stations_location (latitude, longitude) "
        f"INCLUDE ({include}) WHERE removed_at IS NULL AND published_to_our_drivers AND evse_count > 0"
    )


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS location_map_visible")
        schema_editor.execute(visible_index(AFTER))
        schema_editor.execute("ALTER TABLE stations_location SET (fillfactor = 85)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS location_map_visible")
        schema_editor.execute(visible_index(BEFORE))
        schema_editor.execute("ALTER TABLE stations_location RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("stations", "0013_status_history_partitions")]

    operations = [migrations.RunPython(forwards, backwards)]
