"""The on-disk (and in-S3) layout of a run's checkpoints: the `step-N` names, the completion
marker, and which directories count as complete. Shared by the checkpointer and the S3 mirror."""

from __future__ import annotations

import re
from pathlib import Path

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / ".metadata").is_file()


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Published checkpoints, oldest first. Directories without the marker are skipped."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)
