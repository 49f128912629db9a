"""Every pinned version (charts, images, installers), read from infra/data/pins.json.

One data file holds each pin with its source and the day it was checked; code reads its
versions from here (`chart`, `image`, `installer`), so an upgrade is an edit of the data file
and `scripts/check_pins.py` can list every pin next to the newest release it finds.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PINS_FILE = Path(__file__).resolve().parent / "data" / "pins.json"
SECTIONS = ("charts", "images", "installers")


@cache
def load() -> dict[str, Any]:
    return json.loads(PINS_FILE.read_text())


def _entry(section: str, key: str) -> dict[str, Any]:
    try:
        return load()[section][key]
    except KeyError:
        have = ", ".join(sorted(load().get(section, {})))
        raise KeyError(f"{PINS_FILE.name}: no {section} pin {key!r} (have: {have})") from None


def chart(key: str) -> dict[str, Any]:
    """A Helm chart pin: `chart`, `repo` (None for an OCI chart), `version`, provenance."""
    return _entry("charts", key)


def image(key: str) -> str:
    """A container image reference, pinned by tag or digest."""
    return _entry("images", key)["value"]


def installer(key: str) -> str:
    return _entry("installers", key)["value"]


def entries() -> list[tuple[str, str, dict[str, Any]]]:
    """(section, key, entry) of every pin, in file order."""
    data = load()
    return [(s, k, e) for s in SECTIONS for k, e in data.get(s, {}).items()]


def value(section: str, entry: dict[str, Any]) -> str:
    return entry["version"] if section == "charts" else entry["value"]
