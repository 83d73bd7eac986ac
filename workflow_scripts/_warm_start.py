"""Warm start for local workflow jobs: a job runs in a fork of a process that has already imported torch,
transformers and peft, instead of importing them again.

Why: on a 2-core laptop every job paid ~10 s of imports before its first line of work (torch 3.5 s,
transformers and peft 6 s more), a third of the demo's CPU time across its ~80 jobs. Snakemake has no
persistent workers, so the first local job that finds no server starts one (`python _warm_start.py serve
<socket>`, detached) and, like every job after it, hands itself to it from `_setup.start`:

    job process (started by Snakemake)            server (imports done once)
      connect, send argv/cwd/env/sys.path  ---->  fork: the child takes the job's stdin/stdout/stderr,
      and its stdin/stdout/stderr                 cwd, environment and sys.path
      wait; forward SIGTERM/SIGINT          <---  child: runpy the job's script as __main__, send its exit code
      exit with the child's code

The child imports peftlab itself (the server never does), so a job runs the code on disk, as the workflow's
code fingerprints say. A child is a fresh interpreter's equal for what a job computes: Python's and numpy's
global random states are reseeded from the OS as a new process seeds them, torch's default generator is
untouched in the server (its fixed default seed, as in a new process), and tests/test_warm_start.py checks
that a job's outputs are bit-identical warm and cold. A process's resident memory (CPU runs' memory column)
includes what the server imported: ~7 MB more than a train job imports itself, ~1% of a demo job's.

Off where it cannot help or could hurt: PEFTLAB_WARM_START=0, inside a SLURM job (one job per allocation),
for jobs holding GPUs, and on machines with NVIDIA/AMD GPU devices at all (CUDA cannot start in a child whose
parent touched it, and GPU jobs' imports are small beside their compute). The server keys its socket on the
interpreter, the environment and the installed packages, so a job never joins a server that imported under
other settings, and exits after IDLE_SECONDS without a job.
"""

import contextlib
import fcntl
import glob
import hashlib
import importlib
import io
import json
import os
import runpy
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

SWITCH = "PEFTLAB_WARM_START"  # "0": every job starts cold
CHILD = "PEFTLAB_WARM_CHILD"  # set in a forked job (and inherited by what it starts): no second hand-off
IDLE_SECONDS = 120
REPLY_SECONDS = 20  # a server that does not fork within this is treated as gone: the job runs cold
STARTUP_SECONDS = 120  # the longest a job waits for a starting server (its imports) before it runs cold
FAILED_SECONDS = 600  # after a server failed to start (its .failed file says why), jobs run cold this long
# What every job imports that costs (measured with -X importtime); never peftlab itself.
PRELOAD = ("numpy", "torch", "transformers", "transformers.modeling_utils", "transformers.generation", "peft",
           "safetensors.torch", "tokenizers", "sentencepiece", "sacrebleu", "snakemake.logging",
           "snakemake.iocontainers")


def enabled(gpus: int) -> bool:
    """Whether a job asking for `gpus` GPUs may run in a warm fork on this machine."""
    return (os.environ.get(SWITCH, "1") != "0" and not os.environ.get(CHILD) and sys.platform == "linux"
            and "SLURM_JOB_ID" not in os.environ and gpus == 0
            and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"))


def socket_path() -> str | None:
    """The server for this interpreter, environment and set of installed packages, in a folder of this user's
    that nobody else can write (None where that folder is not safely ours: the job then runs cold)."""
    folder = os.path.join(tempfile.gettempdir(), f"peftlab-warm-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
        packages = sysconfig.get_paths()["purelib"]
        installed = os.stat(packages).st_mtime_ns if os.path.isdir(packages) else 0
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    key = json.dumps([sys.executable, sys.version, PRELOAD, sorted(os.environ.items()), installed])
    path = os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:16] + ".sock")
    return path if len(path.encode()) < 100 else None  # a socket's path has ~107 bytes at most


def hand_off(gpus: int) -> None:
    """Run this job in a warm fork and exit with its code; return at once where that is off or no server
    answers (the job then runs here, cold, and the first such job starts a server for the next ones)."""
    if not enabled(gpus) or not os.path.isfile(sys.argv[0]):  # a fork re-runs a script file (not python -c)
        return
    path = socket_path()
    conn = connect(path) if path else None
    if conn is None:
        return
    request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path}
    try:
        conn.settimeout(REPLY_SECONDS)
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
        int(json.loads(conn.recv(1 << 16))["pid"])
        conn.sendall(b"go")  # from here the child runs the job; before, an unanswered child exits unrun
    except (OSError, ValueError, KeyError, TypeError):
        conn.close()
        return
    conn.settimeout(None)
    forwarded: list[int] = []

    def forward(signum, _frame):
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            conn.sendall(f"signal {signum}".encode())

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    reply = b""
    with contextlib.suppress(OSError):
        reply = conn.recv(1 << 16)
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = int(json.loads(reply)["exit"])
        os._exit(code)
    # the child died without a word (killed by a signal): die of the signal forwarded to it, or fail
    if forwarded:
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    os._exit(1)


def connect(path: str) -> socket.socket | None:
    """A connection to the server, started here if none is starting. A job waits for a starting server rather
    than import everything itself: on 2 cores, the first jobs importing beside the server took twice as long
    as waiting for it. None (run cold) when the server gives up (its lock is free again) or takes too long."""
    with contextlib.suppress(OSError):
        if time.time() - os.stat(path + ".failed").st_mtime < FAILED_SECONDS:
            return None  # a server for these settings failed to start lately: no job waits for another
    deadline, spawned_at = time.monotonic() + STARTUP_SECONDS, None
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(path)
            return conn
        except OSError:
            conn.close()
        if not server_starting(path):
            if spawned_at is not None and time.monotonic() - spawned_at > 5:
                return None  # the server we started did not stay (it found CUDA in use, or died)
            if spawned_at is None:
                subprocess.Popen([sys.executable, __file__, "serve", path], start_new_session=True, close_fds=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                spawned_at = time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def server_starting(path: str) -> bool:
    """Whether a server holds the lock (it takes it before importing, binds the socket after)."""
    with open(path + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        return False  # closing the file releases the shared lock at once


def serve(path: str) -> None:
    lock = open(path + ".lock", "w")  # noqa: SIM115 (held for the server's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another job started the server first
    os.chdir("/")  # hold no job's folder
    try:
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
            raise RuntimeError("CUDA was initialised while importing: a fork could not use it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(path)
        os.chmod(path, 0o600)
        server.listen(64)
    except BaseException as error:
        with open(path + ".failed", "w") as note:
            note.write(f"{type(error).__name__}: {error}\n")
        raise
    server.settimeout(IDLE_SECONDS)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # killed, the server still removes its files
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                break
            if os.fork() == 0:
                server.close()
                lock.close()
                for signum in (signal.SIGCHLD, signal.SIGTERM):  # a job's own subprocesses must be waitable,
                    signal.signal(signum, signal.SIG_DFL)  # and SIGTERM is the job's to handle, as when cold
                run_child(conn)
            conn.close()
    finally:
        # New jobs start cold (and a new server) rather than queue behind a closing one. Removing the lock file
        # too can at worst let two servers start, the later one bound to the path: the other idles out unused.
        for leftover in (path, path + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        server.close()


def run_child(conn: socket.socket) -> None:
    code = 1
    try:
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for target, name in enumerate(("stdin", "stdout", "stderr")):
            stream = io.open(target, "r" if target == 0 else "w", closefd=False,  # noqa: UP020
                             buffering=1 if os.isatty(target) and target else -1)
            setattr(sys, name, stream)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"], **{CHILD: "1"})
        sys.path[:], sys.argv[:] = request["path"], request["argv"]
        reseed()
        conn.sendall(json.dumps({"pid": os.getpid()}).encode())
        if conn.recv(16) != b"go":
            os._exit(0)
        threading.Thread(target=watch_job_process, args=(conn,), daemon=True).start()
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
        except BaseException:
            sys.excepthook(*sys.exc_info())
        finally:
            import logging

            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode())
    finally:
        os._exit(code)


def reseed() -> None:
    """Fresh global random states, as a new interpreter has (the server's would be shared by every job)."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def watch_job_process(conn: socket.socket) -> None:
    """Signals the job process forwards, and its death (end of stream), become signals to this child: a
    cancelled or preempted job stops here too (SIGTERM: training checkpoints and stops, as when cold)."""
    while True:
        try:
            message = conn.recv(64)
        except OSError:
            message = b""
        if not message:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        with contextlib.suppress(ValueError):
            os.kill(os.getpid(), int(message.split()[1]))


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
