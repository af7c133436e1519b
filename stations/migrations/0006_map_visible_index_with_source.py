"""The map's covering index also carries source_id: a marker's staleness reads its feed's last confirmation."""

from django.db import migrations

OLD_INCLUDE = (
    "id, party_id, map_status, status_updated_at, max_power_kw, connector_standards, limited_access, "
    "limited_access_override, evse_count, available_evse_count, name"
)
NEW_INCLUDE = OLD_INCLUDE + ", source_id"


def visible_index(include: str) -> str:
    return (
        "CREATE INDEX IF NOT EXISTS location_map_visible ON stations_location (latitude, longitude) "
        f"INCLUDE ({include}) WHERE removed_at IS NULL AND publish AND evse_count > 0"
    )


def rebuild(include: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute("DROP INDEX IF EXISTS location_map_visible")
            schema_editor.execute(visible_index(include))

    return run


class Migration(migrations.Migration):
    dependencies = [("stations", "0005_syncrun_deferred_removals")]

    operations = [migrations.RunPython(rebuild(NEW_INCLUDE), rebuild(OLD_INCLUDE))]
