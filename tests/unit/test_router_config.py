from pathlib import Path

import pytest
import yaml

from support.routing_files import (
    FLAT_SCORER,
    ConfigMapDir,
    external_routing,
    routing_config,
    write_plain,
)
from zeta_router.api.routing import RoutingConfig
from zeta_router.router.config import (
    BUILTIN_THRESHOLDS,
    ConfigError,
    RuntimeConfig,
    compile_config,
    load_config,
    normalise_url,
    parse_config,
    standalone_config,
)
from zeta_router.router.reload import ConfigWatcher

TIERS = {"small": "http://small:8000", "large": "http://large:8000/v1/"}


def _cfg(**kw: object) -> dict[str, object]:
    return routing_config(TIERS, scorer=FLAT_SCORER, **kw)  # type: ignore[arg-type]


def test_compile_resolves_urls_contexts_and_local_tier() -> None:
    raw = _cfg(thresholds={"ZetaHRM": [0.3], "default": [0.6]})
    raw["tiers"][0]["localUrl"] = "http://127.0.0.1:8001"  # type: ignore[index]
    raw["tiers"][1]["servedModelName"] = "qwen-14b"  # type: ignore[index]
    rc = compile_config(RoutingConfig.model_validate(raw), local_tier="small")
    assert [t.url for t in rc.tiers] == ["http://127.0.0.1:8001", "http://large:8000"]
    assert rc.tiers[1].model == "qwen-14b"
    assert rc.tiers[0].model is None
    assert rc.contexts["ZetaHRM"].selector.cuts == (0.3,)
    assert rc.default_context == "ZetaHRM"
    assert rc.router_name == "assistant"
    # Another pod of the same router reaches "small" through its Service.
    other = compile_config(RoutingConfig.model_validate(raw), local_tier="large")
    assert other.tiers[0].url == "http://small:8000"


def test_unknown_local_tier_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--local-tier 'medium' is not one of"):
        compile_config(RoutingConfig.model_validate(_cfg()), local_tier="medium")


def test_scorer_weights_naming_unknown_features_are_rejected() -> None:
    raw = routing_config(TIERS, scorer={"bias": 0, "weights": {"no_such_feature": 1.0}})
    with pytest.raises(ConfigError, match="no_such_feature"):
        compile_config(RoutingConfig.model_validate(raw))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(tiers=[]), "tiers"),
        (lambda c: c.update(defaultContext="nope"), "defaultContext 'nope'"),
        (lambda c: c["contexts"][0].update(thresholds=[0.4, 0.6]), "need 1"),
        (lambda c: c["contexts"][0].update(thresholds=[1.5]), "less than or equal to 1"),
        (lambda c: c.update(shadowSampleRate=2), "shadowSampleRate"),
        (lambda c: c.update(unknownField=1), "unknownField"),
        (lambda c: c.update(circuitBreaker={"failureThreshold": 0}), "failureThreshold"),
    ],
)
def test_invalid_config_messages_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = _cfg()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_config(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [unclosed", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping"), ("", "mapping")],
)
def test_garbage_is_rejected(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_normalise_url() -> None:
    assert normalise_url("http://h:1/v1/") == "http://h:1"
    assert normalise_url(" https://h ") == "https://h"
    with pytest.raises(ConfigError, match="http://"):
        normalise_url("h:1")


def test_standalone_config_builtin_contexts_and_overrides() -> None:
    cfg = standalone_config(
        [("small", "http://a:1"), ("large", "http://b:2/v1")],
        thresholds={"ZetaTRM": [0.7], "extra": [0.2]},
        models={"large": "big"},
    )
    cuts = {c.name: c.thresholds for c in cfg.contexts}
    assert cuts == {
        "ZetaHRM": [BUILTIN_THRESHOLDS["ZetaHRM"]],
        "ZetaTRM": [0.7],
        "default": [BUILTIN_THRESHOLDS["default"]],
        "extra": [0.2],
    }
    assert cfg.default_context == "default"
    assert cfg.tiers[1].url == "http://b:2"
    assert cfg.tiers[1].served_model_name == "big"


def test_standalone_config_spreads_thresholds_for_more_tiers() -> None:
    cfg = standalone_config([("s", "http://a"), ("m", "http://b"), ("l", "http://c")])
    for c in cfg.contexts:
        assert len(c.thresholds) == 2
        assert c.thresholds[0] < c.thresholds[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tiers": []}, "at least one --tier"),
        ({"thresholds": {"default": [0.5, 0.6]}}, "need 1"),
        ({"models": {"medium": "x"}}, "unknown tiers"),
        ({"default_context": "nope"}, "defaultContext"),
    ],
)
def test_standalone_config_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"tiers": [("small", "http://a"), ("large", "http://b")]} | kwargs
    tiers = args.pop("tiers")
    with pytest.raises(ConfigError, match=message):
        standalone_config(tiers, **args)  # type: ignore[arg-type]


class _Sink:
    def __init__(self) -> None:
        self.configs: list[int] = []
        self.errors: list[str] = []


def _watcher(path: Path, sink: _Sink) -> ConfigWatcher:
    return ConfigWatcher(
        path,
        local_tier=None,
        on_config=lambda c: sink.configs.append(c.generation),
        on_error=sink.errors.append,
    )


def test_watcher_plain_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(generation=1))
    sink = _Sink()
    w = _watcher(path, sink)
    w.prime(path.read_bytes(), load_config(path))
    assert not w.poll()
    write_plain(path, _cfg(generation=2))
    assert w.poll()
    assert sink.configs == [2]
    assert not w.poll()  # unchanged content is not applied twice


def test_watcher_same_size_same_mtime_rewrite_is_seen(tmp_path: Path) -> None:
    import os

    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(thresholds={"default": [0.3]}))
    st = path.stat()
    sink = _Sink()
    w = _watcher(path, sink)
    w.prime(path.read_bytes(), load_config(path))
    write_plain(path, _cfg(thresholds={"default": [0.7]}))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert w.poll()


def test_watcher_configmap_symlink_swap(tmp_path: Path) -> None:
    cm = ConfigMapDir(tmp_path / "cm")
    cm.write(_cfg(generation=1))
    sink = _Sink()
    w = _watcher(cm.path, sink)
    assert w.poll()
    cm.write(_cfg(generation=2))
    assert w.poll()
    cm.write(_cfg(generation=3))
    assert w.poll()
    assert sink.configs == [1, 2, 3]


def test_watcher_keeps_last_good_and_reports_each_bad_content_once(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(generation=1))
    sink = _Sink()
    w = _watcher(path, sink)
    assert w.poll()
    write_plain(path, "tiers: [oops")
    assert not w.poll()
    assert not w.poll()
    assert len(sink.errors) == 1
    assert "not valid YAML" in sink.errors[0]
    write_plain(path, _cfg(defaultContext="missing"))
    assert not w.poll()
    assert len(sink.errors) == 2
    assert "defaultContext" in sink.errors[1]
    path.write_bytes(b"\xff\xfe")
    assert not w.poll()
    assert "UTF-8" in sink.errors[2]
    path.unlink()
    assert not w.poll()
    assert "cannot read" in sink.errors[3]
    write_plain(path, _cfg(generation=5))
    assert w.poll()
    assert sink.configs == [1, 5]


# ---- an external tier's key file, rotated in place ----------------------------------------------


class _KeySink:
    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.errors: list[str] = []

    def config(self, c: RuntimeConfig) -> None:
        self.keys.append(c.tier_by_name["hosted"].api_key)


def _keyed(tmp_path: Path, key: str) -> tuple[Path, ConfigMapDir, ConfigWatcher, _KeySink]:
    """A routing file naming a key file laid out like a mounted Secret (``api-key ->
    ..data/api-key``), the watcher primed with both, as the router starts."""
    secret = ConfigMapDir(tmp_path / "secret", filename="api-key")
    secret.write(key + "\n")
    path = tmp_path / "routing.yaml"
    cfg = external_routing(
        "http://small:8000", "https://llm.example.com", "m", to_external=True, key_file=secret.path
    )
    write_plain(path, cfg)
    sink = _KeySink()
    w = ConfigWatcher(path, local_tier=None, on_config=sink.config, on_error=sink.errors.append)
    w.prime(path.read_bytes(), load_config(path))
    return path, secret, w, sink


def test_a_key_rotated_in_its_secret_is_taken_without_a_new_routing_file(tmp_path: Path) -> None:
    _, secret, w, sink = _keyed(tmp_path, "sk-old")
    assert not w.poll()  # (what the router started with)
    secret.write("sk-new\n")  # the kubelet's swap of the Secret volume
    assert w.poll()
    assert sink.keys == ["sk-new"]
    assert not w.poll()
    secret.write("sk-new")  # the same key (no line break): nothing new to apply
    assert not w.poll()
    assert sink.keys == ["sk-new"]
    assert sink.errors == []


def test_a_key_file_that_cannot_be_used_keeps_the_key_in_use_and_is_reported_once(
    tmp_path: Path,
) -> None:
    _, secret, w, sink = _keyed(tmp_path, "sk-old")
    secret.write("")
    assert not w.poll()
    assert not w.poll()
    assert len(sink.errors) == 1
    assert "is empty" in sink.errors[0]
    assert sink.keys == []  # the configuration, and its key, stay
    secret.write("sk-one sk-two")
    assert not w.poll()
    assert len(sink.errors) == 2
    assert "sk-one" not in sink.errors[1]
    secret.write("sk-good")
    assert w.poll()
    assert sink.keys == ["sk-good"]


def test_a_routing_file_refused_for_its_missing_key_file_is_taken_once_the_file_is_there(
    tmp_path: Path,
) -> None:
    path, _, w, sink = _keyed(tmp_path, "sk-old")
    later = tmp_path / "later" / "api-key"
    cfg = external_routing(
        "http://small:8000", "https://llm.example.com", "m", to_external=True, key_file=later
    )
    write_plain(path, cfg)
    assert not w.poll()
    assert not w.poll()
    assert len(sink.errors) == 1
    assert str(later) in sink.errors[0]
    later.parent.mkdir()
    later.write_text("sk-later")
    assert w.poll()
    assert sink.keys == ["sk-later"]
