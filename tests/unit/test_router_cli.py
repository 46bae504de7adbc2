import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.routing_files import FLAT_SCORER, routing_config, write_plain
from zeta_router.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zeta_router", "router", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_explains_both_modes() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for word in (
        "--config",
        "--tier",
        "--threshold",
        "--local-tier",
        "ZetaHRM",
        "X-Zeta-Context",
        "/readyz",
        "SIGTERM",
    ):
        assert word in out.stdout


def test_print_config_standalone(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            *("router", "--tier", "small=http://a:1", "--tier", "large=http://b:2/v1"),
            *("--threshold", "ZetaHRM=0.3", "--tier-model", "large=big", "--print-config"),
        ]
    )
    assert rc == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert [t["url"] for t in cfg["tiers"]] == ["http://a:1", "http://b:2"]
    assert cfg["tiers"][1]["servedModelName"] == "big"
    assert {c["name"]: c["thresholds"] for c in cfg["contexts"]}["ZetaHRM"] == [0.3]


def test_print_config_file_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(
        path, routing_config({"a": "http://a", "b": "http://b"}, scorer=FLAT_SCORER, generation=7)
    )
    assert main(["router", "--config", str(path), "--local-tier", "a", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["generation"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --config PATH, or at least one --tier"),
        (["--tier", "small"], "must look like NAME=VALUE"),
        (["--tier", "small=ftp://x"], "must start with http"),
        (["--tier", "a=http://a", "--tier", "a=http://b"], "duplicate tier names"),
        (["--tier", "a=http://a", "--tier", "b=http://b", "--threshold", "default=x"], "numbers"),
        (
            ["--tier", "a=http://a", "--tier", "b=http://b", "--threshold", "default=0.5,0.6"],
            "need 1",
        ),
        (["--tier", "a=http://a", "--local-tier", "a"], "--local-tier is for --config"),
        (["--config", "/nonexistent/routing.yaml"], "cannot read"),
        (["--config", "x.yaml", "--tier", "a=http://a"], "not both"),
    ],
)
def test_argument_errors_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["router", *args, "--print-config"]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_key_file_exits_2_before_listening(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("too short\n")
    out = _run("--tier", "a=http://127.0.0.1:9", "--port", "0", "--request-key-file", str(key))
    assert out.returncode == 2
    assert "--request-key-file" in out.stderr
    assert "at least 16 bytes" in out.stderr
    out = _run("--tier", "a=http://127.0.0.1:9", "--request-key-file", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "cannot read" in out.stderr


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        # A hard limit of 300: 4096 connections cannot fit; each may need one to each of two
        # tiers, so (300 - 64 reserved) / 3.
        ((300, 300), 78),
        # The soft limit is raised to the hard one, where 1888 client connections and 1024 per
        # tier fit.
        ((300, 4000), 1888),
        ((300, 6208), 4096),  # exactly what 4096 and 2 x 1024 and the reserve need
    ],
)
def test_the_connection_cap_fits_the_descriptor_limit(
    limits: tuple[int, int], expected: int
) -> None:
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, {limits})\n"
        "from zeta_router.router.connections import fd_budget\n"
        "print(fd_budget(4096, 2, 1024), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    cap, soft = (int(x) for x in out.stdout.split())
    assert cap == expected
    assert cap + 2 * min(cap, 1024) + 64 <= soft
