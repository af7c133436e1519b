"""Unpublished locations whose `publish_allowed_to` names our cards' issuer are shown to our drivers (with a lock).

The map's covering index now selects on the new flag instead of `publish`.
"""

from django.conf import settings
from django.db import migrations, models

INCLUDE = (
    "id, party_id, map_status, status_updated_at, max_power_kw, connector_standards, limited_access, "
    "limited_access_override, evse_count, available_evse_count, name, source_id"
)


def visible_index(condition: str) -> str:
    return (
        "CREATE INDEX IF NOT EXISTS location_map_visible ON stations_location (latitude, longitude) "
        f"INCLUDE ({INCLUDE}) WHERE removed_at IS NULL AND {condition} AND evse_count > 0"
    )


def fill_and_reindex(apps, schema_editor):
    Location = apps.get_model("stations", "Location")
    # The new column is true everywhere (its database default); only unpublished rows change, so a large
    # table is not rewritten (which would also cost the map its index-only scans until the next VACUUM).
    Location.objects.filter(publish=False).update(published_to_our_drivers=False)
    ours = settings.OCPI_BUSINESS_NAME.casefold()
    granted = [
        pk
        for pk, allowed in Location.objects.filter(publish=False).values_list("pk", "publish_allowed_to")
        if any(isinstance(e, dict) and str(e.get("issuer", "")).casefold() == ours for e in allowed or [])
    ]
    Location.objects.filter(pk__in=granted).update(published_to_our_drivers=True)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS location_map_visible")
        schema_editor.execute(visible_index("published_to_our_drivers"))


def reindex_on_publish(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS location_map_visible")
        schema_editor.execute(visible_index("publish"))


class Migration(migrations.Migration):
    dependencies = [("stations", "0006_map_visible_index_with_source")]

    operations = [
        migrations.AddField(
            model_name="location",
            name="published_to_our_drivers",
            field=models.BooleanField(
                db_default=True,
                default=True,
                help_text="Published, or unpublished but `publish_allowed_to` names our cards' issuer (shown with a lock).",
            ),
        ),
        migrations.RunPython(fill_and_reindex, reindex_on_publish),
    ]
