"""Print every pin of infra/data/pins.json next to the newest release found for it.

These machines reach PyPI and npm only. A pin with a `pypi` (or `npm`) key is looked up there;
Helm chart repositories and container registries cannot be reached, so those pins are listed
with the release recorded in the data file (`released`, `source`) and marked as not checkable
from here. Run by hand before bumping pins:

    python scripts/check_pins.py [--strict]

Exit 0; with --strict, 1 when a checkable pin is behind the newest release.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import pins

TIMEOUT_S = 20
PYPI_URL = "https://pypi.org/pypi/{name}/json"
NPM_URL = "https://registry.npmjs.org/{name}"
UNREACHABLE = {
    "charts": "Helm chart repository (not reachable from here)",
    "images": "container registry (not reachable from here)",
    "installers": "vendor download site (not reachable from here)",
}


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return json.load(response)


def newest_pypi(name: str) -> tuple[str, str]:
    data = _get_json(PYPI_URL.format(name=name))
    version = data["info"]["version"]
    files = data["releases"].get(version, [])
    uploaded = min((f["upload_time"] for f in files), default="")[:10]
    return version, uploaded


def newest_npm(name: str) -> tuple[str, str]:
    data = _get_json(NPM_URL.format(name=name))
    version = data["dist-tags"]["latest"]
    return version, data.get("time", {}).get(version, "")[:10]


def pinned_release(section: str, entry: dict) -> str:
    """The upstream release a pin stands for (an image's tag without a leading 'v')."""
    value = pins.value(section, entry)
    if section == "images":
        value = value.rsplit(":", 1)[-1]
    return value.removeprefix("v")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strict", action="store_true", help="exit 1 when a checked pin is behind")
    args = p.parse_args(argv)
    behind = 0
    rows = [("pin", "pinned", "newest found", "released", "how")]
    for section, key, entry in pins.entries():
        pinned = pins.value(section, entry)
        registry = "pypi" if "pypi" in entry else "npm" if "npm" in entry else None
        if registry is None:
            rows.append(
                (
                    f"{section}.{key}",
                    pinned,
                    "(not checked)",
                    entry.get("released", "?"),
                    f"{UNREACHABLE[section]}; recorded: {entry['source']}",
                )
            )
            continue
        name = entry[registry]
        try:
            newest, released = (newest_pypi if registry == "pypi" else newest_npm)(name)
        except (urllib.error.URLError, TimeoutError, KeyError, ValueError) as e:
            rows.append(
                (f"{section}.{key}", pinned, "(lookup failed)", "", f"{registry}:{name}: {e}")
            )
            continue
        current = pinned_release(section, entry) == newest
        behind += not current
        rows.append(
            (
                f"{section}.{key}",
                pinned,
                newest,
                released,
                f"{registry}:{name}" + ("" if current else "  <-- newer release"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 1 if args.strict and behind else 0


if __name__ == "__main__":
    sys.exit(main())
