"""The environment descriptions must not drift apart: pyproject (direct deps), requirements.lock (pins), environment.yml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[norm(name)] = version
    return pins


def direct_deps() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [norm(re.split(r"[<>=!~ \[]", d)[0]) for d in project["dependencies"]]


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {norm(p.split("==")[0]): p.split("==")[1] for p in pip if "==" in p}


def test_every_direct_dependency_is_locked_and_in_environment_yml():
    locked, conda = lock_pins(), conda_pins()
    for dep in direct_deps():
        assert dep in locked, f"{dep} is in pyproject.toml but not in requirements.lock"
        assert conda.get(dep) == locked[dep], f"environment.yml pins {dep}=={conda.get(dep)}, the lock {locked[dep]}"


def test_environment_yml_pins_nothing_else():
    assert set(conda_pins()) == set(direct_deps())


def test_lock_has_no_platform_only_wheels():
    assert not [p for p in lock_pins() if p.startswith(("nvidia-", "cuda-"))]


def test_makefile_and_ci_run_the_readme_commands():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
