"""Dockerfile and docker-compose.yml against the repository they deploy.

No Docker engine runs here, so nothing is built or started: these tests hold the two files to what
can be checked without one — every COPY source exists and survives .dockerignore, the pins and
the Python version agree with pyproject.toml, the runtime user is not root, every compose service
has its healthcheck, restart policy, volume, port and environment, the commands name programs and
modules the install provides, and Dagster loads the compose instance config with the DuckDB pool
limit and the queued run coordinator.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DATA_MOUNT = "/app/data"
LONG_RUNNING = {"redis", "dagster-webserver", "dagster-daemon", "api"}
ONE_SHOT = {"pipeline"}
# what runs the graph or serves, hence reads REDIS_URL (the graph publishes, the service reads)
NEEDS_REDIS = {"dagster-webserver", "dagster-daemon", "api", "pipeline"}
RUNS_THE_GRAPH = {"dagster-webserver", "dagster-daemon", "pipeline"}


# --------------------------------------------------------------------------------------- helpers
def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(name: str) -> str:
    for dep in _pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no {name}")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each its instructions from FROM on."""
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _build_args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM), as ${NAME} in FROM lines resolves them."""
    args = {}
    for word, rest in _instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def _from_image(stage: list[tuple[str, str]]) -> str:
    image = stage[0][1].split()[0]
    for name, value in _build_args().items():
        image = image.replace(f"${{{name}}}", value)
    return image


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers what is below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        candidates = [pat, pat.removeprefix("**/")]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatch(part, pat.removeprefix("**/"))
            for part in parts
            if pat.startswith("**/")
        ):
            ignored = not negate
    return ignored


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict) -> dict[int, int]:
    """container port -> host port of the service's `ports`."""
    out = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        out[int(container)] = int(host.rpartition(":")[2])
    return out


def _command_port(command: list[str]) -> int:
    for flag in ("-p", "--port"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    raise AssertionError(f"no port flag in {command}")


def _healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    url = re.search(r"https?://[^'\" ]+", " ".join(test))
    assert url, f"healthcheck {test} requests no URL"
    return url.group(0)


# --------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_with_compilers_only_in_the_builder():
    stages = _stages()
    assert len(stages) >= 2, "a builder stage and a slim runtime stage"
    builder, runtime = stages[0], stages[-1]
    builder_name = builder[0][1].split()[-1]
    assert builder[0][1].split()[-2].upper() == "AS"
    runs = lambda stage: " ".join(rest for word, rest in stage if word == "RUN")  # noqa: E731
    assert re.search(r"\bgcc\b", runs(builder)) and re.search(r"\bg\+\+", runs(builder))
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", runs(runtime)), (
        "the runtime stage installs a compiler"
    )
    copies = [rest for word, rest in runtime if word == "COPY" and "--from=" in rest]
    assert any(f"--from={builder_name}" in c and "/opt/venv" in c for c in copies), (
        "the runtime stage must take the built venv from the builder"
    )
    assert "/opt/venv/bin" in _env(runtime).get("PATH", "")


def test_dockerfile_python_and_torch_agree_with_pyproject():
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    for stage in _stages():
        image = _from_image(stage)
        m = re.fullmatch(r"python:(\d+\.\d+)[-\w.]*", image)
        assert m, f"stage image {image!r} is not an official python image"
        assert f"{m.group(1)}.0" in requires, f"{image} vs requires-python {requires}"
    assert len({_from_image(s) for s in _stages()}) == 1, (
        "builder and runtime must share the interpreter the venv was built with"
    )

    torch_installs = [
        rest for word, rest in _stages()[0] if word == "RUN" and re.search(r"torch==", rest)
    ]
    assert len(torch_installs) == 1, torch_installs
    install = torch_installs[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in install, (
        "torch must come from the CPU wheel index (PyPI's default wheel is the CUDA build)"
    )
    assert re.search(r"torch==(\S+)", install).group(1) == _pin("torch")
    # and before the project, so the project's install finds it satisfied
    order = [rest for word, rest in _stages()[0] if word == "RUN"]
    project = next(i for i, r in enumerate(order) if re.search(r"pip install (\.|-e)", r))
    assert order.index(install) < project


def test_dockerfile_runs_as_a_non_root_user_it_creates():
    runtime = _stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    created = " ".join(rest for word, rest in runtime if word == "RUN")
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", created), f"user {user} not created"
    words = [word for word, _ in runtime]
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert last_user < words.index("CMD") and last_user < words.index("ENTRYPOINT")


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = _dockerignore()
    sources = []
    for word, rest in _instructions():
        if word in {"COPY", "ADD"} and "--from=" not in rest:
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            sources += args[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # the build context carries no venv, no generated data, no git history
    for heavy in (".venv/bin/python", "data/warehouse.duckdb", ".git/HEAD"):
        assert _ignored(heavy, patterns), f"{heavy} is sent to the Docker build"


def test_dockerfile_installs_every_package_pyproject_builds():
    """A package in pyproject.toml's find list but not copied would be missing in the image."""
    setuptools = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {pattern.rstrip("*") for pattern in setuptools}
    builder_copies = [
        shlex.split(rest)[:-1] for word, rest in _stages()[0] if word == "COPY"
    ]  # fmt: skip
    copied = {src.rstrip("/") for srcs in builder_copies for src in srcs}
    assert tops <= copied, f"packages not copied into the builder: {sorted(tops - copied)}"
    readme = _pyproject()["project"]["readme"]
    assert readme in copied, "pyproject's readme is needed by `pip install .`"


def test_entrypoint_links_the_instance_config_and_keeps_a_mounted_one(tmp_path):
    """The ENTRYPOINT's shell, run as the image runs it (with /bin/sh), in three situations."""
    entrypoint = json.loads(
        next(rest for word, rest in _stages()[-1] if word == "ENTRYPOINT")
    )  # fmt: skip

    def start(home: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*entrypoint, "printf", "[%s]", "started", "two $words"],
            env={"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=10,
        )

    fresh = tmp_path / "fresh" / "dagster_home"  # a new volume: the folder does not exist yet
    first = start(fresh)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "[started][two $words]", "the command must be exec'd unchanged"
    assert (fresh / "dagster.yaml").is_symlink()
    assert os.readlink(fresh / "dagster.yaml") == "/app/dagster.yaml"
    again = start(fresh)  # a restart: the link (dangling outside the image) is already there
    assert again.returncode == 0, again.stderr

    mounted = tmp_path / "k8s"  # Kubernetes: the instance ConfigMap, a read-only file
    mounted.mkdir()
    (mounted / "dagster.yaml").write_text("storage: {}\n")
    (mounted / "dagster.yaml").chmod(0o444)
    mounted.chmod(0o555)
    try:
        kept = start(mounted)
    finally:
        mounted.chmod(0o755)
    assert kept.returncode == 0, kept.stderr
    assert not (mounted / "dagster.yaml").is_symlink()
    assert (mounted / "dagster.yaml").read_text() == "storage: {}\n"

    # a DAGSTER_HOME that cannot be created (a file in the way; for uid 10001 also a folder it
    # may not write): the command still starts, and stderr says why nothing was linked
    (tmp_path / "a-file").write_text("")
    blocked = start(tmp_path / "a-file" / "dagster_home")
    assert blocked.returncode == 0 and blocked.stdout == "[started][two $words]"
    assert "cannot create DAGSTER_HOME" in blocked.stderr


def test_image_environment_matches_the_compose_contract():
    env = _env(_stages()[-1])
    assert env["RECSYS_DATA_DIR"] == DATA_MOUNT
    assert env["DAGSTER_HOME"] == f"{DATA_MOUNT}/dagster_home"
    assert env["RECSYS_HOST"] == "0.0.0.0", "a container must listen beyond loopback"
    runtime_copies = " ".join(rest for word, rest in _stages()[-1] if word == "COPY")
    assert "dagster.yaml" in runtime_copies and "workspace.yaml" in runtime_copies
    workdir = [rest for word, rest in _stages()[-1] if word == "WORKDIR"][-1]
    assert workdir == str(Path(DATA_MOUNT).parent), "relative defaults resolve against WORKDIR"


# --------------------------------------------------------------------------------------- compose
def test_compose_has_every_service_with_healthcheck_and_restart_policy():
    services = _services()
    assert set(services) == LONG_RUNNING | ONE_SHOT
    for name in LONG_RUNNING:
        svc = services[name]
        assert svc.get("restart") in {"unless-stopped", "always"}, f"{name}: restart policy"
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name}: no healthcheck"
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert services["dagster-daemon"]["healthcheck"]["test"][1:] == [
        "dagster-daemon",
        "liveness-check",
    ]
    # the one-shot main job is not restarted and is kept out of a plain `docker compose up`
    assert services["pipeline"]["restart"] == "no"
    assert services["pipeline"]["profiles"]


def test_compose_http_healthchecks_hit_the_real_endpoints_on_the_served_port():
    services = _services()
    api_url = urlparse(_healthcheck_url(services["api"]))
    assert api_url.port == _command_port(services["api"]["command"])
    app = importlib.import_module("recsys_serving.app").create_app()
    paths = {route.path.rstrip("/") for route in app.routes}
    assert api_url.path.rstrip("/") in paths, f"{api_url.path} is not a route of the service"

    web_url = urlparse(_healthcheck_url(services["dagster-webserver"]))
    assert web_url.port == _command_port(services["dagster-webserver"]["command"])
    assert web_url.path == "/server_info"


def test_compose_publishes_the_service_and_ui_ports():
    services = _services()
    assert _published(services["api"]) == {8000: 8000}
    assert _published(services["dagster-webserver"]) == {3000: 3000}
    for name in ("redis", "dagster-daemon", "pipeline"):
        assert not services[name].get("ports"), f"{name} needs no published port"


def test_compose_volumes_share_data_at_one_path():
    compose = _compose()
    declared = set(compose["volumes"])
    mounts: dict[str, set[str]] = {}
    for name, svc in compose["services"].items():
        for entry in svc.get("volumes", []):
            source, target = entry.split(":")[:2]
            assert source in declared, f"{name}: volume {source} is not declared"
            mounts.setdefault(source, set()).add(target)
            if source == "recsys-data":
                assert target == DATA_MOUNT
    assert mounts["recsys-data"] == {DATA_MOUNT}
    assert declared == set(mounts), f"declared but unused: {declared - set(mounts)}"
    data_users = {
        name
        for name, svc in compose["services"].items()
        if any(str(v).startswith("recsys-data:") for v in svc.get("volumes", []))
    }
    assert data_users == RUNS_THE_GRAPH, "the graph's processes share the instance and warehouse"
    assert "api" not in data_users, "the service reads only Redis"


def test_compose_environment_contract():
    services = _services()
    redis_port = 6379  # the redis service runs redis-server without --port
    assert "--port" not in services["redis"]["command"]
    documented = set(
        re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "architecture.md").read_text())
    )
    for name in NEEDS_REDIS:
        env = _environment(services[name])
        url = urlparse(env.get("REDIS_URL", ""))
        assert url.scheme == "redis" and url.hostname == "redis" and url.port == redis_port, (
            f"{name}: REDIS_URL must name the compose redis service, got {env.get('REDIS_URL')!r}"
        )
        depends = services[name].get("depends_on", {})
        assert depends.get("redis", {}).get("condition") == "service_healthy", name
        assert env["RECSYS_HOST"] == "0.0.0.0"
        undocumented = {k for k in env if k not in documented}
        assert not undocumented, f"{name}: not in docs/architecture.md §7: {undocumented}"
    for name in RUNS_THE_GRAPH:
        env = _environment(services[name])
        assert env["DAGSTER_HOME"] == f"{DATA_MOUNT}/dagster_home"
        assert env["RECSYS_DATA_DIR"] == DATA_MOUNT
        assert Path(env["RECSYS_DUCKDB_PATH"]).parent == Path(DATA_MOUNT)
        assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{DATA_MOUNT}/mlflow.db"


def test_compose_commands_name_installed_programs_and_modules():
    bindir = Path(sys.executable).parent
    for name, svc in _services().items():
        if name == "redis":
            continue
        assert svc.get("image") == "recsys:latest" and svc["build"]["context"] == "."
        command = svc["command"]
        program = command[0]
        if program == "python":
            assert command[1] == "-m"
            assert importlib.util.find_spec(command[2]), f"{name}: no module {command[2]}"
        else:
            assert (bindir / program).exists(), f"{name}: {program} is not installed"
        if "-w" in command:
            assert (ROOT / command[command.index("-w") + 1]).is_file()
        if program == "uvicorn":
            module, _, attr = command[1].partition(":")
            assert hasattr(importlib.import_module(module), attr)


def test_compose_instance_config_is_dagster_yaml_with_the_queued_coordinator(tmp_path, monkeypatch):
    from dagster import DagsterInstance, QueuedRunCoordinator

    content = _compose()["configs"]["dagster_instance"]["content"]
    instance_cfg = yaml.safe_load(content)
    repo_cfg = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    for section, value in repo_cfg.items():
        assert instance_cfg.get(section) == value, f"dagster.yaml `{section}` differs in compose"
    assert "$" not in content, "compose would interpolate it"
    for name in RUNS_THE_GRAPH:
        targets = {c["target"] for c in _services()[name]["configs"]}
        assert "/app/dagster.yaml" in targets, name

    # loaded as the containers load it: $DAGSTER_HOME/dagster.yaml
    (tmp_path / "dagster.yaml").write_text(content)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.pool_config.pool_granularity.value == "op"
        assert (
            config.run_queue_config.max_concurrent_runs
            == repo_cfg["concurrency"]["runs"]["max_concurrent_runs"]
        )


# --------------------------------------------------------------------------------------- docs
@pytest.mark.parametrize("target", ["docker-compose.yml", "docs/scaling.md", "Dockerfile"])
def test_readme_deployment_section_links_and_says_not_built(target):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Deployment", 1)
    assert len(section) == 2, "README has no '## Deployment' section"
    body = section[1].split("\n## ", 1)[0]
    assert target in body and (ROOT / target).exists()
    assert re.search(r"not (been )?built", body), "the README must say the images were not built"
