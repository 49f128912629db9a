"""Writes .github/action-pins.json: each GitHub Action the workflows use, at the release we pin,
read from a git snapshot of the action's own repository (the tag, the commit it peels to, the
tag's date and `runs.using` of its action.yml at that commit).

    python scripts/action_pins.py [--mirror /work/.mirror] [--out .github/action-pins.json]

The mirror holds one bare repository per action as `<owner>+<name>/repo` (what the search
tool's `fetch github:<owner>/<name>` brings); nothing here touches the network. The test
`tests/test_workflows.py` checks every `uses:` of every workflow against the file.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".github" / "action-pins.json"

# The action (owner/repo[/path]) and the release tag we pin. Bump a tag here, rerun.
WANTED: dict[str, str] = {
    "actions/checkout": "v7.0.1",
    "actions/setup-python": "v7.0.0",
    "actions/github-script": "v8.0.0",
    "actions/upload-artifact": "v7.0.0",
    "aws-actions/configure-aws-credentials": "v6.2.3",
    "aws-actions/amazon-ecr-login": "v2.1.7",
    "docker/setup-buildx-action": "v4.3.0",
    "docker/build-push-action": "v7.3.0",
    "github/codeql-action/upload-sarif": "v4.36.2",
    "pulumi/actions": "v7.0.0",
}
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _newest_release(repo: Path) -> str:
    tags = [t for t in _git(repo, "tag", "-l").splitlines() if _SEMVER.match(t)]
    return max(tags, key=lambda t: tuple(int(x) for x in _SEMVER.match(t).groups()))  # type: ignore[union-attr]


def read_action(mirror: Path, action: str, tag: str) -> dict[str, str]:
    """One entry of the pins file, read from the action repository's snapshot."""
    owner, name, *path = action.split("/")
    repo = mirror / f"{owner}+{name}" / "repo"
    if not repo.is_dir():
        raise SystemExit(f"{action}: no snapshot at {repo} (fetch github:{owner}/{name})")
    sha = _git(repo, "rev-parse", f"refs/tags/{tag}^{{commit}}")
    kind = _git(repo, "cat-file", "-t", f"refs/tags/{tag}")
    tag_date = (
        _git(repo, "for-each-ref", "--format=%(taggerdate:short)", f"refs/tags/{tag}")
        if kind == "tag"
        else _git(repo, "log", "-1", "--format=%cs", sha)
    )
    prefix = "/".join(path) + "/" if path else ""
    for filename in ("action.yml", "action.yaml"):
        try:
            metadata = yaml.safe_load(_git(repo, "show", f"{sha}:{prefix}{filename}"))
            break
        except subprocess.CalledProcessError:
            continue
    else:
        raise SystemExit(f"{action}@{tag}: no {prefix}action.yml")
    return {
        "version": tag,
        "sha": sha,
        "tag_date": tag_date,
        "runs_using": str(metadata["runs"]["using"]),
        "newest_release_in_snapshot": _newest_release(repo),
        "snapshot_head_date": _git(repo, "log", "-1", "--format=%cs", "HEAD"),
        "source": f"https://github.com/{owner}/{name}/blob/{tag}/{prefix}action.yml",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    actions = {a: read_action(args.mirror, a, tag) for a, tag in sorted(WANTED.items())}
    document = {
        "_about": "GitHub Actions pinned by the workflows: the commit each release tag peels to "
        "and the runtime its action.yml declares, read with git from a snapshot of each "
        "action's repository (scripts/action_pins.py).",
        "checked": date.today().isoformat(),
        "actions": actions,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    for action, pin in actions.items():
        print(f"{action}@{pin['sha']} # {pin['version']} ({pin['tag_date']}, {pin['runs_using']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
