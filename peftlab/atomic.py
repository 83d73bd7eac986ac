"""Outputs appear whole or not at all: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_json(data: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place (a rename cannot replace a non-empty folder: remove first)."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)


def user_umask() -> int:
    """The process's umask (os.umask can only be read by setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a file, or a folder and everything in it, the modes open() and mkdir give under the user's umask.

    Some writers create private files: tempfile.mkdtemp makes 0700 folders and safetensors 0.8 writes its files
    0600 (model.safetensors, method.safetensors), which would hide finished outputs from the rest of the
    user's group on a shared cluster."""
    mask = user_umask()
    path = Path(path)
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


def make_temp_dir(parent: Path, prefix: str = ".tmp-") -> Path:
    """A fresh folder in `parent` to write an output into before replace_dir moves it into place, with the
    mode a plain mkdir gives (tempfile.mkdtemp's is 0700); call follow_umask on it once written."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    follow_umask(path)
    return path
