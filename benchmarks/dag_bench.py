"""DAG construction and no-op reruns: peftlab's Snakefile against a bare twin with the same jobs and files.

    python benchmarks/dag_bench.py [--configfile config/studies/ustun2022-mt.yaml] [--repeats 3]
    python benchmarks/dag_bench.py --noop [--noop-configfile config/test.yaml]   # also runs the test study once
    python benchmarks/dag_bench.py --noop --skip-dry-run --noop-configfile config/config.yaml --noop-dir <clone>
                                                  # no-op rerun of a demo already finished in <clone>

The twin is generated from peftlab's own DAG: one rule per peftlab rule with the same output and log patterns
(wildcard constraints included), the same jobs, the same input, output and log files, but no config schema, no
grid checks, no params, no peftlab imports: each rule's input is one dictionary lookup and its action a
`touch`. Its dry run is the floor Snakemake itself needs for this DAG; the ratio is peftlab's overhead.

Both run from fresh copies of the repository in a temporary folder (nothing under results/), alternating
real and twin `repeats` times, so load from other processes hits both alike. `--noop` copies the repository
once more, runs the test study to completion (minutes of CPU), runs the twin of that DAG to completion, and
then times a dry run and a no-op run of each.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def copy_repo(dest: Path) -> Path:
    """The checkout without its environment, caches and outputs."""
    skip = shutil.ignore_patterns(".venv", ".git", ".snakemake", "__pycache__", ".pytest_cache", ".ruff_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"results", "logs"} if Path(folder) == REPO else set()
        return set(skip(folder, names)) | (top & set(names))

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> tuple[float, str]:
    """Wall seconds and stdout of one snakemake call."""
    start = time.perf_counter()
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {workdir}:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-4000:]}")
    return elapsed, proc.stdout


def parse_jobs(dry_run_stdout: str) -> list[dict]:
    """Jobs of a dry run's listing: rule, input and output files, wildcards."""
    jobs, job = [], None
    for line in dry_run_stdout.splitlines():
        stripped = line.strip()
        if m := JOB_HEADER.match(stripped):
            job = {"rule": m.group(1), "input": [], "output": [], "wildcards": {}}
            jobs.append(job)
        elif job is not None and ":" in stripped:
            key, _, value = stripped.partition(": ")
            if key in ("input", "output"):
                job[key] = value.split(", ")
            elif key == "wildcards":
                job["wildcards"] = dict(kv.split("=", 1) for kv in value.split(", "))
        elif not stripped:
            job = None
    return jobs


def job_count(dry_run_stdout: str) -> int:
    m = re.search(r"^total\s+(\d+)", dry_run_stdout, re.M)
    return int(m.group(1)) if m else 0


def rule_outputs(workdir: Path, configfile: str) -> dict[str, dict]:
    """Each rule's output patterns (wildcard constraints inlined) with whether each is a directory, and its log
    patterns."""
    code = f"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                      config_settings=ConfigSettings(configfiles=[Path({configfile!r})]))._workflow
    json.dump({{r.name: {{"output": [(str(f), bool(f.is_directory)) for f in r.output],
                          "log": [str(f) for f in r.log]}} for r in wf.rules}}, sys.stdout)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


TWIN_HEADER = '''# A bare twin of peftlab's DAG (benchmarks/dag_bench.py): same rules, outputs, logs, jobs and files.
import json

INPUTS = json.load(open("twin_inputs.json"))


def key(w):
    return "|".join(f"{k}={w[k]}" for k in sorted(w.keys()))

'''


def write_twin(twin_dir: Path, jobs: list[dict], outputs: dict[str, dict], source_dir: Path) -> None:
    """The twin Snakefile, its input table and the files no job writes (config files), copied from source_dir;
    rule order as in peftlab (the first rule is the target)."""
    produced = {f for job in jobs for f in job["output"]}
    for source in {f for job in jobs for f in job["input"]} - produced:
        if (source_dir / source).is_file():
            (twin_dir / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / source, twin_dir / source)
    inputs: dict[str, dict[str, list[str]]] = {}
    for job in jobs:
        wc = job["wildcards"]
        inputs.setdefault(job["rule"], {})["|".join(f"{k}={wc[k]}" for k in sorted(wc))] = job["input"]
    rules = [r for r in outputs if r in inputs]
    if "all" in rules:
        rules.remove("all")
        rules.insert(0, "all")
    text = [TWIN_HEADER]
    for rule in rules:
        outs, logs = outputs[rule]["output"], outputs[rule]["log"]
        text.append(f"rule {rule}:\n    input:\n        lambda w: INPUTS[{rule!r}][key(w)],\n")
        if logs:
            text.append("    log:\n" + "".join(f"        {p!r},\n" for p in logs))
        if outs:
            items = [f"directory({p!r})" if is_dir else repr(p) for p, is_dir in outs]
            text.append("    output:\n" + "".join(f"        {item},\n" for item in items))
            dirs = " ".join(f"{{output[{i}]}}" for i, (_, d) in enumerate(outs) if d)
            files = " ".join(f"{{output[{i}]}}" for i, (_, d) in enumerate(outs) if not d)
            cmd = " && ".join(c for c in (f"mkdir -p {dirs}" if dirs else "",
                                           f"mkdir -p $(dirname {files}) && touch {files}" if files else "") if c)
            text.append(f"    shell:\n        {cmd!r}\n")
        text.append("\n\n")
    (twin_dir / "Snakefile").write_text("".join(text).rstrip() + "\n")
    (twin_dir / "twin_inputs.json").write_text(json.dumps(inputs))


def timed_pair(label_a: str, run_a, label_b: str, run_b, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label_a: [], label_b: []}
    for _ in range(repeats):  # interleaved, so drifting load affects both alike
        times[label_a].append(run_a())
        times[label_b].append(run_b())
    return times


def row(what: str, jobs: int | str, seconds: list[float]) -> str:
    return (f"| {what:<58} | {jobs!s:>6} | {statistics.median(seconds):8.2f} | {min(seconds):8.2f} | "
            f"{len(seconds):>2} |")


def header() -> str:
    return (f"| {'what':<58} | {'jobs':>6} | {'median s':>8} | {'min s':>8} | {'n':>2} |\n"
            f"|{'-' * 60}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 4}|")


def startup_floor(repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds to start python, to start snakemake, and to import peftlab's grid (which must not load torch)."""
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    commands = ([sys.executable, "-c", "pass"], [*SNAKEMAKE, "--version"],
                [sys.executable, "-c", "import peftlab.grid"])
    for _ in range(repeats):
        for out, cmd in zip(times, commands, strict=True):
            start = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
            out.append(time.perf_counter() - start)
    return times


def dry_run_bench(configfile: str, repeats: int, work: Path) -> list[str]:
    real = copy_repo(work / "real")
    twin = work / "twin"
    twin.mkdir()
    args = ["-n", "--cores", "1", "--configfile", configfile]
    first, listing = snakemake(real, *args)  # also warms the page cache for both
    jobs = parse_jobs(listing)
    write_twin(twin, jobs, rule_outputs(real, configfile), real)
    _, twin_listing = snakemake(twin, "-n", "--cores", "1")
    n_real, n_twin = job_count(listing), job_count(twin_listing)
    if n_real != n_twin or len(jobs) != n_real:
        raise RuntimeError(f"twin has {n_twin} jobs, peftlab {n_real} (parsed {len(jobs)})")
    times = timed_pair("real", lambda: snakemake(real, *args)[0],
                       "twin", lambda: snakemake(twin, "-n", "--cores", "1")[0], repeats)
    py, sm, imp = startup_floor(repeats)
    study = yaml.safe_load((REPO / configfile).read_text())["study"]
    real_s, twin_s = statistics.median(times["real"]), statistics.median(times["twin"])
    ratio = real_s / twin_s
    lines = [f"DAG construction: snakemake -n of {configfile} ({study}) vs its bare twin", header(),
             row(f"peftlab Snakefile, {configfile}", n_real, times["real"]),
             row("bare twin: same rules, jobs and files", n_twin, times["twin"]),
             row("startup: python -c pass", "", py),
             row("startup: python -m snakemake --version", "", sm),
             row("python -c 'import peftlab.grid'", "", imp),
             "",
             f"ratio peftlab / bare twin (medians): {ratio:.2f}x  (target: <= 1.5x)",
             f"peftlab overhead beyond the twin: {real_s - twin_s:.1f} s, "
             f"of which importing peftlab.grid is {statistics.median(imp) - statistics.median(py):.1f} s"]
    return lines


def noop_bench(configfile: str, repeats: int, work: Path, finished: Path | None = None) -> list[str]:
    """finished: a checkout where the study already ran to completion (e.g. a fresh clone after `make demo`):
    timed as it is, instead of a copy of this one run first."""
    twin = work / "noop-twin"
    twin.mkdir()
    if finished is None:
        real = copy_repo(work / "noop-real")
        _, listing = snakemake(real, "-n", "--cores", "2", "--configfile", configfile)
    else:  # every job of the finished DAG, as a forced dry run lists them (it runs nothing)
        real = finished.resolve()
        _, listing = snakemake(real, "-n", "--forceall", "--cores", "2", "--configfile", configfile)
    jobs = parse_jobs(listing)
    write_twin(twin, jobs, rule_outputs(real, configfile), real)
    if finished is None:
        print(f"running {configfile} to completion ({len(jobs)} jobs; minutes of CPU) ...", file=sys.stderr,
              flush=True)
        full, _ = snakemake(real, "--cores", "2", "--configfile", configfile)
    twin_full, _ = snakemake(twin, "--cores", "2")
    dry = ["-n", "--cores", "2", "--configfile", configfile]
    run = ["--cores", "2", "--configfile", configfile]
    for d, a in ((real, dry), (twin, ["-n", "--cores", "2"])):
        out = snakemake(d, *a)[1]
        if "Nothing to be done" not in out:
            raise RuntimeError(f"{d} is not up to date after a full run:\n{out[-3000:]}")
    dry_times = timed_pair("real", lambda: snakemake(real, *dry)[0],
                           "twin", lambda: snakemake(twin, "-n", "--cores", "2")[0], repeats)
    run_times = timed_pair("real", lambda: snakemake(real, *run)[0],
                           "twin", lambda: snakemake(twin, "--cores", "2")[0], repeats)
    n = len(jobs)
    first = f"finished in {finished}" if finished is not None else f"first full run {full:.0f} s"
    return [f"No-op rerun of a finished workflow: {configfile} ({first}; twin {twin_full:.1f} s)",
            header(),
            row("peftlab: snakemake -n (nothing to be done)", n, dry_times["real"]),
            row("bare twin: snakemake -n", n, dry_times["twin"]),
            row("peftlab: snakemake (no-op run)", n, run_times["real"]),
            row("bare twin: snakemake (no-op run)", n, run_times["twin"]),
            "",
            f"ratio peftlab / bare twin, dry run: "
            f"{statistics.median(dry_times['real']) / statistics.median(dry_times['twin']):.2f}x; no-op run: "
            f"{statistics.median(run_times['real']) / statistics.median(run_times['twin']):.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/studies/ustun2022-mt.yaml",
                        help="study whose dry run is timed (default: the largest, ustun2022-mt)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (interleaved)")
    parser.add_argument("--noop", action="store_true", help="also time no-op reruns of a finished workflow")
    parser.add_argument("--noop-configfile", default="config/test.yaml")
    parser.add_argument("--noop-dir", type=Path, help="with --noop: a checkout where --noop-configfile's study "
                        "already finished (a fresh clone after `make demo`), timed instead of running the study")
    parser.add_argument("--skip-dry-run", action="store_true", help="only the no-op part")
    parser.add_argument("--dir", type=Path, help="work folder, kept (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="peftlab-dag-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        lines = []
        if not args.skip_dry_run:
            lines += dry_run_bench(args.configfile, args.repeats, work)
        if args.noop:
            lines += ["", *noop_bench(args.noop_configfile, args.repeats, work, args.noop_dir)]
        print("\n".join(lines))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
