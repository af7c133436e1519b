"""Sources for the Content-Security-Policy that depend on other settings (read by settings.py, so no Django here)."""

from __future__ import annotations

from urllib.parse import urlsplit


def tile_source(url_template: str) -> str | None:
    """The CSP source that admits a map tile URL template: `scheme://host[:port]`.

    A templated host label (`https://{s}.tile.example.org/...`) becomes a wildcard for that label and the ones
    left of it (`https://*.tile.example.org`), the only wildcard CSP knows. A relative template is our own ('self').
    """
    parts = urlsplit(url_template)
    if not parts.netloc:
        return None
    labels = parts.netloc.split(".")
    templated = [index for index, label in enumerate(labels) if "{" in label]
    if templated:
        labels = ["*", *labels[templated[-1] + 1 :]]
    return f"{parts.scheme}://{'.'.join(labels)}"
