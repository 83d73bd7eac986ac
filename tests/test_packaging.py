"""The ways to install peftlab agree: requirements.txt, environment.yml, pyproject.toml and the Makefile."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().split("[")[0]] = line.lower()
    return pins


def test_environment_yml_pins_what_requirements_txt_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    env_pins = {line.lower().split("==")[0].split("[")[0]: line.lower() for line in pip if "==" in line}
    torch = re.search(r"torch==([\d.]+)", (REPO / "Makefile").read_text()).group(0)
    assert env_pins.pop("torch") == torch
    assert env_pins == requirement_pins()
    assert "-e ." in pip and conda_python


def test_pyproject_depends_on_every_required_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    # what a declared package's extras pull in (sacrebleu[ja,ko] -> the MeCab packages), pinned in requirements
    for dependency in project["dependencies"]:
        if m := re.match(r"([\w-]+)\[([\w,]+)\]", dependency):
            extras = m.group(2).split(",")
            for req in importlib.metadata.requires(m.group(1)) or []:
                if any(f'extra == "{e}"' in req for e in extras):
                    declared.add(re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower())
    demo_only = set(project["optional-dependencies"]["demo"])  # the demo's data and weights, not the library's
    assert set(requirement_pins()) - {d.lower() for d in demo_only} - declared == set()
    assert "torch" in declared
