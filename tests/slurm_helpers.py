"""Run snakemake against the real single-node SLURM that .ci/slurm/start.sh starts.

For a test module that needs the cluster:

    import slurm_helpers

    pytestmark = pytest.mark.slurm

    @pytest.fixture(scope="session")
    def slurm_cluster():
        yield from slurm_helpers.cluster_session()

    def test_study(slurm_cluster, tmp_path):
        result = slurm_helpers.run_snakemake_slurm(tmp_path, REPO / "Snakefile", configfile=...)
        assert result.returncode == 0, result.stdout
        jobs = slurm_helpers.sacct_jobs(tmp_path)

Outside CI the cluster tests skip where the cluster cannot be started (not root, no apt-get);
with CI=true they fail instead, so a CI job never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / ".ci" / "slurm" / "start.sh"
STOP = REPO / ".ci" / "slurm" / "stop.sh"
STATE_DIR = Path(os.environ.get("PEFTLAB_SLURM_DIR", "/tmp/peftlab-slurm"))
SLURM_CONF = STATE_DIR / "etc" / "slurm.conf"
# the production profile, then the CI overlay (a later --profile overrides key by key)
PROFILES = (REPO / "profiles" / "slurm", REPO / "profiles" / "slurm-ci")
# what start.sh needs installed; where it is missing, start.sh installs it with apt-get
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
SACCT_FIELDS = (
    "JobID", "JobName", "Partition", "Account", "State", "ReqMem", "Timelimit", "ReqCPUS", "AllocTRES",
    "WorkDir", "Comment",
)  # fmt: skip


def why_unavailable() -> str | None:
    """Why start.sh cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "starting the SLURM daemons needs root"
    installed = all(Path("/usr/sbin", d).exists() for d in DAEMONS) and shutil.which("sbatch")
    if not installed and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    return None


def cluster_running() -> bool:
    """True when start.sh's slurmctld is up (its PID file names a live slurmctld)."""
    pidfile = STATE_DIR / "slurm" / "slurmctld.pid"
    try:
        pid = pidfile.read_text().strip()
        return Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    except (OSError, ValueError):
        return False


def cluster_session() -> Iterator[float]:
    """Body of a session fixture: start the cluster, yield start.sh's wall time, stop it.

    A cluster that was already running when the session began (a developer started it by hand)
    is left running.
    """
    reason = why_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SLURM tests must run in CI, but: {reason}")
        pytest.skip(reason)
    was_running = cluster_running()
    t0 = time.monotonic()
    # start.sh detaches its daemons from our pipes; without that, run() would wait forever here
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - t0
    if started.returncode != 0:
        pytest.fail(f"{START} failed ({started.returncode}):\n{started.stdout}\n{started.stderr}")
    print(f"\n{START.name}: {elapsed:.1f} s\n{started.stdout}")
    try:
        yield elapsed
    finally:
        if not was_running:
            stopped = subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=300)
            print(stopped.stdout, stopped.stderr)


def slurm_env() -> dict[str, str]:
    """Environment for snakemake and SLURM clients: this cluster's config, this venv first on PATH."""
    env = dict(os.environ)
    env["SLURM_CONF"] = str(SLURM_CONF)
    # sbatch --export=ALL hands PATH to the job: its `python -m snakemake` must be this one
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: Sequence[str] = (),
    profiles: Sequence[Path] = PROFILES,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in `workdir` through the SLURM profiles; stdout holds stdout and stderr.

    On timeout snakemake gets SIGINT, which makes it scancel its jobs (it ignores SIGTERM while
    jobs run), then SIGKILL if it is still there a minute later.
    """
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    for profile in profiles:
        cmd += ["--profile", str(profile)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(extra_args)
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=slurm_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        out += f"\n[run_snakemake_slurm] timed out after {timeout} s"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def sacct_jobs(workdir: Path) -> list[dict[str, str]]:
    """Accounting records (allocations, not steps) of the jobs submitted from `workdir`, oldest first.

    ReqMem is in MB ("16000M"); Comment is the plugin's "rule_<rule>[_wildcards_<...>]".
    """
    out = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--units=M", "--starttime=now-7days",
         "--format=" + ",".join(SACCT_FIELDS)],
        capture_output=True, text=True, check=True, env=slurm_env(), timeout=60,
    ).stdout  # fmt: skip
    rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line]
    here = str(Path(workdir).resolve())
    return sorted((r for r in rows if r["WorkDir"] == here), key=lambda r: int(r["JobID"].split("_")[0]))
