"""Warm start (workflow_scripts/_warm_start.py): jobs forked from a process that imported torch once compute
what cold jobs compute, keep their own output streams, exit codes and signals, and stay cold where it is off."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "workflow_scripts"
FIXTURE = REPO / "tests" / "fixtures" / "warm_start"
sys.path.insert(0, str(SCRIPTS))
import _warm_start  # noqa: E402

pytestmark = pytest.mark.skipif(not _warm_start.enabled(0) and os.environ.get(_warm_start.SWITCH) != "0",
                                reason="warm start is off on this machine (GPU devices, SLURM job or not Linux)")


def probe_workflow(workdir: Path, *targets: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(FIXTURE / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--forceall", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def records(workdir: Path) -> dict[int, dict]:
    return {int(p.stem): json.loads(p.read_text()) for p in (workdir / "out").glob("[0-9]*.json")}


def wait_for(path: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"no warm server at {path} after {seconds} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory) -> tuple[dict, dict, subprocess.CompletedProcess]:
    cold_dir, warm_dir = tmp_path_factory.mktemp("cold"), tmp_path_factory.mktemp("warm")
    cold = probe_workflow(cold_dir, env={_warm_start.SWITCH: "0"})
    assert cold.returncode == 0, cold.stderr[-3000:]
    first = probe_workflow(warm_dir)  # its first job starts the server; later ones may already fork from it
    assert first.returncode == 0, first.stderr[-3000:]
    warm = probe_workflow(warm_dir)  # the server is up now: every job forks
    assert warm.returncode == 0, warm.stderr[-3000:]
    return records(cold_dir), records(warm_dir), warm


def test_warm_jobs_compute_what_cold_jobs_compute(cold_and_warm):
    cold, warm, _ = cold_and_warm
    assert sorted(cold) == sorted(warm) == list(range(6))
    assert not any(r["warm"] for r in cold.values())
    assert all(r["warm"] for r in warm.values())
    for seed in cold:
        # seeded training and seeded numpy: bit for bit
        assert warm[seed]["weights"] == cold[seed]["weights"], seed
        assert warm[seed]["numpy_seeded"] == cold[seed]["numpy_seeded"], seed
        assert warm[seed]["torch_threads"] == cold[seed]["torch_threads"] == 1
        assert warm[seed]["cwd"] == cold[seed]["cwd"].replace(cold[seed]["cwd"], warm[seed]["cwd"])
    # the warm jobs ran in forks of one server, which had imported more than a cold job needs
    assert len({r["ppid"] for r in warm.values()}) == 1
    assert min(r["modules"] for r in warm.values()) > max(r["modules"] for r in cold.values())


def test_warm_jobs_draw_their_own_unseeded_randomness(cold_and_warm):
    """A fork would otherwise share the server's global random states: every job the same 'random' draw."""
    _, warm, _ = cold_and_warm
    assert len({r["python_unseeded"] for r in warm.values()}) == len(warm)
    assert len({r["numpy_unseeded"] for r in warm.values()}) == len(warm)


def test_warm_jobs_write_to_their_own_streams(cold_and_warm):
    _, _, warm = cold_and_warm
    for seed in range(6):
        assert f"probe {seed} on stdout" in warm.stdout
        assert f"probe {seed} on stderr" in warm.stderr


def test_a_failing_warm_job_fails_with_its_traceback(cold_and_warm, tmp_path):
    # the fixture's server is up (same environment): this job forks from it
    failed = probe_workflow(tmp_path, "out/fail.json")
    assert failed.returncode != 0
    assert "non-zero exit status 1" in failed.stderr
    log = (tmp_path / "logs" / "fail.log").read_text()
    assert "ValueError: the probe fails on purpose" in log
    assert not (tmp_path / "out" / "fail.json").exists()


JOB = """
import os, signal, sys, time
sys.path.insert(0, {scripts!r})
from _warm_start import hand_off
hand_off(0)
def stop(signum, frame):
    with open({marker!r} + ".part", "w") as f:
        f.write(f"{{os.getpid()}} {{signum}}")
    os.replace({marker!r} + ".part", {marker!r})
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
print("warm" if os.environ.get("PEFTLAB_WARM_CHILD") else "cold", flush=True)
time.sleep(float(os.environ.get("PROBE_SLEEP", "120")))
"""


def own_server(tmp_path: Path, **extra: str) -> tuple[dict, str]:
    """An environment whose server is this test's own (the key covers the environment), and that server's path."""
    env = {**os.environ, "PEFTLAB_TEST_SERVER": str(tmp_path), "PYTHONPATH": str(SCRIPTS), **extra}
    env.pop(_warm_start.SWITCH, None)
    path = subprocess.run([sys.executable, "-c", "import _warm_start; print(_warm_start.socket_path())"], env=env,
                          capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    return env, path


@pytest.fixture
def job_with_server(tmp_path):
    """A script that hands itself off, and a server for its environment already listening."""
    marker = tmp_path / "signalled"
    script = tmp_path / "job.py"
    script.write_text(JOB.format(scripts=str(SCRIPTS), marker=str(marker)))
    env, path = own_server(tmp_path)
    server = subprocess.Popen([sys.executable, str(SCRIPTS / "_warm_start.py"), "serve", path], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(path)
    yield script, marker, env
    server.terminate()
    server.wait(timeout=30)
    assert not Path(path).exists() and not Path(path + ".lock").exists()  # a stopped server removes its files


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_job_process_stops_its_warm_fork(job_with_server, kill):
    """Snakemake (or the user) signals the process it started: SIGTERM is forwarded to the fork, which exits
    with its own handler's code; a SIGKILLed job process takes its fork down with SIGTERM (no orphan)."""
    script, marker, env = job_with_server
    job = subprocess.Popen([sys.executable, str(script)], env=env, cwd=script.parent, stdout=subprocess.PIPE,
                           text=True)
    assert job.stdout.readline().strip() == "warm"
    job.send_signal(kill)
    code = job.wait(timeout=60)
    assert code == (7 if kill == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    fork_pid, signum = map(int, marker.read_text().split())
    assert fork_pid != job.pid and signum == signal.SIGTERM


def test_after_a_server_failed_to_start_jobs_run_cold_without_waiting(tmp_path):
    env, path = own_server(tmp_path, PROBE_SLEEP="0")
    Path(path + ".failed").write_text("RuntimeError: CUDA was initialised while importing\n")
    script = tmp_path / "job.py"
    script.write_text(JOB.format(scripts=str(SCRIPTS), marker=str(tmp_path / "signalled")))
    job = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert job.stdout.strip() == "cold"  # without the note it starts a server, waits for it and runs warm
    assert not Path(path).exists()


def test_off_switch_and_gpu_jobs_run_cold(monkeypatch):
    monkeypatch.setenv(_warm_start.SWITCH, "0")
    assert not _warm_start.enabled(0)
    monkeypatch.delenv(_warm_start.SWITCH)
    assert not _warm_start.enabled(1)  # CUDA must start in a process that never forked from one touching it
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not _warm_start.enabled(0)


def test_the_server_is_keyed_on_the_environment(monkeypatch):
    """A job never joins a server that imported under other settings (HF_HUB_OFFLINE is read at import)."""
    before = _warm_start.socket_path()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if os.environ.get("HF_HUB_OFFLINE") != "1" else "0")
    assert _warm_start.socket_path() != before
