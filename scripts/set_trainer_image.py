"""Points a stack's training jobs at a pushed trainer image: rewrites `image:` of every entry of
`llmcloud:training` in stacks/Pulumi.<stack>.yaml to `<repository>@<digest>`, leaving every other
line as written. The trainer-image workflow runs it after a push and opens a pull request.

    python scripts/set_trainer_image.py --stack dev \\
        --image 111122223333.dkr.ecr.us-east-1.amazonaws.com/llm-dev-trainer@sha256:<64 hex>
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.compile(r"^[a-z0-9.-]+/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")


def set_image(text: str, image: str) -> tuple[str, int]:
    """The stack file with the training jobs' images replaced, and how many were."""
    out, count, in_training = [], 0, False
    for line in text.splitlines(keepends=True):
        if re.match(r"^  \S", line):  # a top-level config key
            in_training = line.startswith("  llmcloud:training:")
        match = re.match(r"^(\s+(?:- )?image:\s*)\S+(.*)$", line.rstrip("\n"))
        if in_training and match:
            line = f"{match[1]}{image}{match[2]}\n"
            count += 1
        out.append(line)
    return "".join(out), count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--image", required=True, help="<repository>@sha256:<digest>")
    parser.add_argument("--project", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    if not PINNED.match(args.image):
        print(
            f"--image {args.image!r}: expected <repository>@sha256:<64 hex digits>", file=sys.stderr
        )
        return 2
    path = args.project / "stacks" / f"Pulumi.{args.stack}.yaml"
    if not path.is_file():
        print(f"--stack {args.stack!r}: no stack file {path}", file=sys.stderr)
        return 2
    text, count = set_image(path.read_text(), args.image)
    if count == 0:
        print(f"{path}: no training job image to set", file=sys.stderr)
        return 1
    path.write_text(text)
    print(f"{path}: {count} training image(s) -> {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
