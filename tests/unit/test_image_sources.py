"""Where image builds get their packages: this machine's Debian mirror (apt sources) and its
pip configuration, parsed without naming any host of our own."""

from __future__ import annotations

import pytest

from zeta_router_dev.images.sources import (
    AptSource,
    PipIndex,
    SourcesError,
    debian_mirror,
    mount_args,
    os_codename,
    parse_deb822,
    parse_one_line,
    parse_pip_config,
    pip_index,
)

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_keeps_enabled_binary_stanzas() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].components == ("main", "contrib")


def test_one_line_format_skips_options_comments_and_sources() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main  # note\n"
    )
    assert parse_one_line(text) == [
        AptSource("http://one.example/debian", ("bookworm",), ("main",))
    ]


def test_the_mirror_is_the_one_that_carries_the_suite_itself() -> None:
    sources = [
        AptSource("http://security.example/", ("bookworm-security",), ("main",)),
        AptSource("http://contrib.example/", ("bookworm",), ("contrib",)),
        AptSource("http://main.example/debian/", ("bookworm", "bookworm-updates"), ("main",)),
    ]
    assert debian_mirror(sources, "bookworm") == "http://main.example/debian"
    with pytest.raises(SourcesError, match="trixie"):
        debian_mirror(sources, "trixie")


def test_os_codename() -> None:
    assert os_codename('PRETTY_NAME="Debian GNU/Linux 12"\nVERSION_CODENAME=bookworm\n') == (
        "bookworm"
    )
    assert os_codename("ID=alpine\n") is None


LISTING = """\
global.index-url='https://pypi.mirror.example/simple'
global.extra-index-url='file:///opt/local/simple https://extra.example/simple'
global.find-links='/opt/wheels /absent/wheels'
global.cert='/etc/ssl/certs/ca.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
install.trusted-host='pypi.mirror.example'
:env:.index-url='https://env.example/simple'
"""


def test_pip_settings_later_lines_win_and_the_environment_last() -> None:
    config = parse_pip_config(LISTING)
    assert config["index-url"] == "https://env.example/simple"
    assert config["trusted-host"] == "pypi.mirror.example"
    assert config["find-links"] == "/opt/wheels /absent/wheels"


def test_pip_index_keeps_what_exists_and_mounts_local_paths() -> None:
    config = parse_pip_config(LISTING)
    exists = {"/opt/local/simple": True, "/opt/wheels": True, "/etc/ssl/certs/ca.crt": True}
    index = pip_index(config, exists)
    assert index.index_url == "https://env.example/simple"
    assert index.extra_index_urls == ("file:///opt/local/simple", "https://extra.example/simple")
    assert index.find_links == ("/opt/wheels",)  # /absent/wheels: pip ignores it too
    # A local index links to files beside it: its parent folder is mounted.
    assert index.mounts == ("/opt/local", "/opt/wheels", "/etc/ssl/certs/ca.crt")
    conf = index.pip_conf()
    assert "index-url = https://env.example/simple" in conf
    assert "trusted-host = pypi.mirror.example" in conf
    assert "constraint" not in conf  # only where packages come from
    assert mount_args(["/a"]) == ["--volume", "/a:/a:ro"]


def test_no_configuration_means_pip_defaults() -> None:
    assert PipIndex().pip_conf() == "[global]\n"
    assert pip_index({}, {}) == PipIndex()
