from importlib import import_module

from django.apps import apps
from django.contrib.admin.apps import SimpleAdminConfig
from django.utils.module_loading import module_has_submodule


class AdminConfig(SimpleAdminConfig):
    """The Django admin, discovering every app's admin module except django-leaflet's.

    django-leaflet's admin module imports GeoDjango widgets that need the GDAL C library; we use
    only its map template tags and static files, so we skip it rather than install GDAL.
    """

    def ready(self) -> None:
        super().ready()
        for app_config in apps.get_app_configs():
            if app_config.name != "leaflet" and module_has_submodule(app_config.module, "admin"):
                import_module(f"{app_config.name}.admin")
