"""The CPU model-server image's `llama-server` takes exactly what the operator renders for
`engine: llamacpp` (and the flags users add in `args`), like llama.cpp's own server; anything else
is refused with its usage, exit status 2."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from zeta_router.api.models import parse_zetarouter
from zeta_router.render.deployment import model_server_args
from zeta_router_dev.cluster.workloads import load_cpu_sample, localize_zetarouter
from zeta_router_dev.images.build import LLAMACPP_MODEL
from zeta_router_dev.images.llama_server import Options, build_params, parse_args


def rendered_args(tier: dict[str, Any]) -> list[str]:
    spec = parse_zetarouter({"tiers": [tier]})
    return model_server_args(spec.tiers[0])


def test_the_rendered_command_line_of_every_cpu_sample_tier_is_accepted() -> None:
    sample = localize_zetarouter(load_cpu_sample(), namespace="n")
    for tier in sample["spec"]["tiers"]:
        opts = parse_args(rendered_args(tier))
        assert opts.model == LLAMACPP_MODEL
        assert opts.alias == tier["servedModelName"]
        assert opts.host == "0.0.0.0"
        assert opts.port == 8000
        assert opts.metrics is True
        assert opts.threads == 1
        assert opts.parallel == 2
        assert opts.ctx_size == 2048


def test_user_flags_short_and_long() -> None:
    opts = parse_args(
        ["-m", "/m.gguf", "-c", "512", "-t", "2", "-tb", "3", "-np", "4", "-b", "64",
         "-ub", "32", "-ngl", "99", "--no-warmup", "-cb", "--port", "0"]
    )  # fmt: skip
    assert opts == Options(
        model="/m.gguf", ctx_size=512, threads=2, threads_batch=3, parallel=4, batch_size=64,
        ubatch_size=32, warmup=False, port=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hf-repo", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m"], "downloads nothing"),
        (["--model", "/m.gguf", "--flash-attn"], "unrecognized arguments: --flash-attn"),
        (["--model", "/m.gguf", "--threads", "0"], "--threads must be at least 1"),
        (["--model", "/m.gguf", "--port", "70000"], "is not a TCP port"),
        ([], "one of the arguments -m/--model -hf/--hf-repo is required"),
    ],
)
def test_bad_command_lines_exit_2_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def fake_xllamacpp() -> SimpleNamespace:
    """What build_params touches of xllamacpp (whose CommonParams differ between versions)."""

    def ns() -> SimpleNamespace:
        return SimpleNamespace(
            model=SimpleNamespace(path=""),
            cpuparams=SimpleNamespace(n_threads=0),
            cpuparams_batch=SimpleNamespace(n_threads=0),
        )

    return SimpleNamespace(CommonParams=ns)


def test_params_for_xllamacpp() -> None:
    fake = fake_xllamacpp()
    opts = parse_args(
        ["-m", "/m.gguf", "--alias", "a", "--host", "0.0.0.0", "--metrics", "-t", "2"]
    )
    params = build_params(opts, fake)
    assert params.model.path == "/m.gguf"
    assert params.hostnames == ["0.0.0.0"]
    assert params.port == 8080
    assert params.endpoint_metrics is True
    assert params.model_alias == {"a"}
    assert params.cpuparams.n_threads == 2
    assert params.cpuparams_batch.n_threads == 2  # follows --threads unless given
    assert params.n_parallel == 2


def test_api_keys_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-server's --api-key: comma-separated, LLAMA_API_KEY when the flag is not given.
    opts = parse_args(["-m", "/m.gguf"])
    assert opts.api_keys == ()
    assert not hasattr(build_params(opts, fake_xllamacpp()), "api_keys")  # none asked
    opts = parse_args(["-m", "/m.gguf", "--api-key", "k1,k2"])
    assert opts.api_keys == ("k1", "k2")
    assert build_params(opts, fake_xllamacpp()).api_keys == ["k1", "k2"]
    monkeypatch.setenv("LLAMA_API_KEY", "from-env")
    assert parse_args(["-m", "/m.gguf"]).api_keys == ("from-env",)
    assert parse_args(["-m", "/m.gguf", "--api-key", "k3"]).api_keys == ("k3",)
