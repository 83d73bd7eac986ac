"""Where a number came from: package versions, the git state, and fingerprints of code and files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import peftlab

PACKAGES = ("torch", "transformers", "peft", "tokenizers", "datasets", "sacrebleu", "duckdb", "snakemake")


def package_versions() -> dict[str, str]:
    versions = {"peftlab": peftlab.__version__, "git": git_state()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_state() -> str:
    """The commit of the peftlab checkout, with '+dirty' when the work tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, keyed by its relative path: a built model's identity by content."""
    folder = Path(folder)
    return {str(f.relative_to(folder)): file_sha256(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def folder_content_hash(folder: Path, cache_file: Path | None = None) -> str:
    """One hash of a folder's files by content (a local base model), so replacing the model in place reruns
    its runs. Hashing multi-GB weights at every DAG build would be slow: each file's digest is cached under
    its (path, size, mtime), which any rewrite of the file changes."""
    folder = Path(folder).resolve()
    cache: dict[str, str] = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except ValueError:
            cache = {}  # a damaged cache is only slower
    digest, changed = hashlib.sha256(), False
    for file in sorted(f for f in folder.rglob("*") if f.is_file()):
        stat = file.stat()
        key = f"{file}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in cache:
            cache[key], changed = file_sha256(file), True
        digest.update(f"{file.relative_to(folder)}:{cache[key]}\n".encode())
    if cache_file is not None and changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        os.replace(tmp, cache_file)
    return digest.hexdigest()[:16]


def code_fingerprint(paths: Iterable[Path]) -> str:
    """A hash of source files (folders expand to their *.py), so a rule reruns when its code changes.

    Snakemake does not track imported modules; a rule passes this through `params:` instead.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
