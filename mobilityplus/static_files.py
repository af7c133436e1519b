"""Static files in production: whitenoise's compressed, content-hashed storage, and its collection at start-up."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from whitenoise.storage import CompressedManifestStaticFilesStorage

ROOT = Path(__file__).resolve().parent.parent


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # A file missing from the manifest keeps its plain name (served or 404) rather than failing the whole page
    # with a 500: a page without one icon still works.
    manifest_strict = False


def collect_if_missing() -> None:
    """Run collectstatic when STATIC_ROOT has no manifest yet (gunicorn started without `make serve`).

    `make serve` collects before every start (so changed files get new hashed names); a gunicorn started on its
    own collects once, so the production command alone always serves a working site.
    """
    if os.environ.get("DEBUG", "").lower() == "true":
        return  # development reads the source files through the finders
    static_root = Path(os.environ.get("STATIC_ROOT", ROOT / "staticfiles"))
    if (static_root / "staticfiles.json").exists():
        return
    static_root.parent.mkdir(parents=True, exist_ok=True)
    # Two servers started at once on a new machine (the two pools) would collect into the same folder together
    # and trip over each other's files: one collects, the other waits and finds the manifest.
    with open(static_root.parent / f".{static_root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (static_root / "staticfiles.json").exists():
            return
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
