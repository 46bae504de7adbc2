"""What can be checked of the Dockerfile without a Docker engine: a pinned slim base, a wheel
built in one stage and installed in the next, no compilers in the final image, a numeric
non-root user, and the console script as entrypoint; and that the chart, manifests/ and the
Makefile name the image it builds."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zeta_router.api import defaults

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def final_stage() -> Stage:
    return parse(DOCKERFILE.read_text())[1][-1]


def test_parser_joins_continuations_and_reads_stages() -> None:
    args, stages = parse("ARG B=img:1\nFROM ${B} AS build\nRUN a \\\n  b\n# c\nFROM ${B}\nUSER 1\n")
    assert args == {"B": "img:1"}
    assert [(s.base, s.name) for s in stages] == [("img:1", "build"), ("img:1", None)]
    assert stages[0].args("RUN") == ["a  b"]


def test_multi_stage_on_a_pinned_slim_python() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", stage.base), (
            f"base image {stage.base!r} is not a pinned python:X.Y.Z-slim-<debian> tag"
        )
        assert ":latest" not in stage.base
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in requires.removeprefix(">=").split("."))
    version = tuple(int(x) for x in stages[-1].base.split(":")[1].split("-")[0].split(".")[:2])
    assert version >= minimum


def test_builder_makes_a_wheel_and_the_final_stage_installs_only_wheels() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    builder, final = stages[0], stages[-1]
    assert any("pip wheel" in r for r in builder.args("RUN"))
    installs = [r for r in final.args("RUN") if "pip install" in r]
    assert installs
    for r in installs:
        assert "--no-index" in r, r  # nothing from an index: only the builder's wheels
        assert f"from={builder.name}" in r or "--find-links" in r
    # The final stage copies no sources: the project arrives as a wheel.
    for c in final.args("COPY"):
        assert "operator" not in c, c


def test_no_compilers_in_the_final_stage() -> None:
    final = final_stage()
    text = " ".join(a for _, a in final.instructions)
    for tool in ("gcc", "g++", "build-essential", "clang", "make ", "python3-dev", "cargo"):
        assert tool not in text, tool


def test_runs_as_a_numeric_non_root_user() -> None:
    final = final_stage()
    users = final.args("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The same UID the pods run as (the chart's securityContext, the router sidecars).
    from zeta_router.render.deployment import ROUTER_UID

    assert int(uid) == ROUTER_UID
    values = yaml.safe_load((REPO / "charts/zeta-router/values.yaml").read_text())
    assert values["operator"]["podSecurityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_the_console_script_and_it_exists() -> None:
    final = final_stage()
    (entrypoint,) = final.args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["zeta-router"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["zeta-router"].partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copied: list[str] = []
    for c in stages[0].args("COPY"):
        parts = [p for p in shlex.split(c) if not p.startswith("--")]
        copied += [p.rstrip("/") for p in parts[:-1]]
    assert "pyproject.toml" in copied
    assert "operator" in copied
    assert project["readme"] in copied  # setuptools reads it while building the wheel
    for path in copied:
        assert path not in ignored, f"{path} is copied but excluded by .dockerignore"
    assert (REPO / "operator").is_dir()
    for heavy in (".git", ".venv", "tests"):
        assert heavy in ignored, heavy


def test_chart_manifests_and_makefile_name_the_image_the_dockerfile_builds() -> None:
    import zeta_router

    version = zeta_router.__version__
    chart = yaml.safe_load((REPO / "charts/zeta-router/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/zeta-router/values.yaml").read_text())
    repository = values["image"]["repository"]
    tag = values["image"]["tag"] or chart["appVersion"]
    assert f"{repository}:{tag}" == defaults.ROUTER_IMAGE == f"zeta-router:{version}"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^IMAGE \?= zeta-router:\$\(VERSION\)$", makefile, re.M)
    assert "docker build -t $(IMAGE) ." in makefile
    assert "kind load docker-image $(IMAGE)" in makefile.replace("$(KIND) ", "kind ")
    kustomization = yaml.safe_load((REPO / "manifests/kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert (image["name"], image["newName"], image["newTag"]) == (
        "zeta-router",
        repository,
        version,
    )
    assert f"docker build -t zeta-router:{version} ." in DOCKERFILE.read_text()


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not a pin"
        assert version, f"requirements.lock: {line!r} is not a pin"
        assert ";" not in line, f"requirements.lock: {line!r} carries a marker"
        pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_from_the_checked_in_lock() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    builder = stages[0]
    assert any("--constraint requirements.lock" in r for r in builder.args("RUN"))
    copied = " ".join(builder.args("COPY"))
    assert "requirements.lock" in copied


def test_the_lock_pins_every_runtime_dependency_within_its_declared_range() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is a dependency but requirements.lock does not pin it"
        assert Version(pins[name]) in req.specifier, (
            f"requirements.lock pins {req.name}=={pins[name]}, outside {req.specifier}: "
            "run `make lock`"
        )
    # Development and test packages never reach the image.
    for dev in ("pytest", "matplotlib", "rich", "openai", "xllamacpp", "mypy"):
        assert dev not in pins, f"{dev} must not be in the image's lock"
