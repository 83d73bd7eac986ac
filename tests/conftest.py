"""Shared fixtures: a copy of the repo with the test study (config/test.yaml) run locally once per session."""

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))  # tests/slurm_helpers.py


def copy_repo(dest: Path) -> Path:
    """The checkout without its environment, caches and outputs (only top-level results/ and logs/)."""
    anywhere = shutil.ignore_patterns(".venv", ".git", ".snakemake", "__pycache__", ".pytest_cache", ".ruff_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"results", "logs"} if Path(folder) == REPO else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, check: bool = True,
                  configfile: str = "config/test.yaml") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", configfile, *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """Writes a dataset repository as the hub lays one out (a parquet file per config and split, the configs
    declared in README.md's YAML) for the real datasets.load_dataset to read, offline; returns its path."""
    import yaml

    datasets = pytest.importorskip("datasets")
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(flag, "1")
        monkeypatch.setattr(datasets.config, flag, True)  # datasets reads the variables once, on import

    def write(name: str, tables: dict, features=None) -> str:
        """tables: {config (None: the only one): {split: {column: values}}}."""
        root, configs = tmp_path / "hub" / name, []
        for config, splits in tables.items():
            files = []
            for split, columns in splits.items():
                path = f"{config or 'default'}/{split}.parquet"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                datasets.Dataset.from_dict(columns, features=features).to_parquet(str(root / path))
                files.append({"split": split, "path": path})
            configs.append({"config_name": config or "default", "data_files": files})
        (root / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n")
        return str(root)

    return write


@pytest.fixture(scope="session")
def local_study(tmp_path_factory) -> Path:
    """A copy of the repo with the test study run to completion on this machine.

    PEFTLAB_FINISHED_STUDY=<folder> reuses a copy finished earlier (tests edit it) while iterating on the
    workflow tests; the run below then only does what the current code and config invalidate."""
    if reused := os.environ.get("PEFTLAB_FINISHED_STUDY"):
        workdir = Path(reused)
        # the code under test, file by file: an unchanged file keeps its time (a script's time reruns its rule)
        code = [f for d in ("peftlab", "rules", "workflow_scripts", "config")
                for f in (REPO / d).rglob("*") if f.is_file()]
        for source in [REPO / "Snakefile", REPO / "environment.yml", *code]:
            target = workdir / source.relative_to(REPO)
            if "__pycache__" not in source.parts and not (target.exists() and filecmp.cmp(source, target, False)):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        run_snakemake(workdir)
        return workdir
    workdir = copy_repo(tmp_path_factory.mktemp("local") / "repo")
    run_snakemake(workdir)
    return workdir


@pytest.fixture(scope="session")
def slurm_cluster():
    """A live single-node SLURM (.ci/slurm/start.sh) for the session; stopped afterwards if we started it."""
    import slurm_helpers

    yield from slurm_helpers.cluster_session()
