"""What the health endpoint reports: the backend, the services and listeners,
and the release of moto the proxy runs on, with the fork's provenance record.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import metadata, resources
from typing import Any

log = logging.getLogger(__name__)

PROVENANCE_FILE = "_provenance.json"


@cache
def moto_release() -> dict[str, Any]:
    """Distribution, version and provenance of the importable moto.

    A release of the fork ships `moto/_provenance.json`; plain upstream moto has
    none, and reports `"provenance": null`.
    """
    try:
        import moto
    except ImportError:
        return {"distribution": None, "version": None, "provenance": None}

    provenance = read_provenance()
    if provenance is not None:
        return {
            "distribution": provenance.get("distribution"),
            "version": provenance.get("version"),
            "provenance": provenance,
        }
    distributions = metadata.packages_distributions().get("moto", ["moto"])
    return {
        "distribution": distributions[0],
        "version": getattr(moto, "__version__", None),
        "provenance": None,
    }


def read_provenance(package: str = "moto") -> dict[str, Any] | None:
    """The provenance record inside `package`, or None when it has none."""
    path = resources.files(package).joinpath(PROVENANCE_FILE)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s from %s: %s", PROVENANCE_FILE, package, exc)
        return None
    return record if isinstance(record, dict) else None
