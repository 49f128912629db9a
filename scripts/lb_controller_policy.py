"""Writes infra/data/lb_controller_iam_policy.json: the actions of the AWS Load Balancer
Controller's reference IAM policy (docs/install/iam_policy.json) at the controller version the
chart pin deploys, read with git from a snapshot of kubernetes-sigs/aws-load-balancer-controller.

    python scripts/lb_controller_policy.py [--mirror /work/.mirror]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "infra" / "data" / "lb_controller_iam_policy.json"
REPO = "kubernetes-sigs+aws-load-balancer-controller"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from infra.cluster.addons import CHARTS

    chart = CHARTS["aws-load-balancer-controller"].version
    git = ["git", f"--git-dir={args.mirror / REPO / 'repo'}"]

    def show(ref: str) -> str:
        return subprocess.run(
            [*git, "show", ref], capture_output=True, text=True, check=True
        ).stdout

    # the chart's appVersion is the controller release it deploys
    tags = subprocess.run([*git, "tag", "-l", "v*"], capture_output=True, text=True).stdout.split()
    tag = next(
        t
        for t in tags
        if yaml.safe_load(
            subprocess.run(
                [*git, "show", f"{t}:helm/aws-load-balancer-controller/Chart.yaml"],
                capture_output=True,
                text=True,
            ).stdout
            or "{}"
        ).get("version")
        == chart
    )
    policy = json.loads(show(f"{tag}:docs/install/iam_policy.json"))
    actions = sorted(
        {
            a
            for s in policy["Statement"]
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        }
    )
    tag_date = subprocess.run(
        [*git, "log", "-1", "--format=%cs", tag], capture_output=True, text=True
    ).stdout.strip()
    doc = {
        "source": f"https://github.com/kubernetes-sigs/aws-load-balancer-controller/blob/{tag}/docs/install/iam_policy.json",
        "controller_version": tag,
        "chart_version": chart,
        "tag_date": tag_date,
        "checked": date.today().isoformat(),
        "actions": actions,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{tag} (chart {chart}, {tag_date}): {len(actions)} actions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
