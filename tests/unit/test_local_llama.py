from zeta_router_dev.local.llama import MODEL_FILE, model_path, parse_metrics


def test_model_path_finds_the_packaged_gguf() -> None:
    path = model_path()
    assert path.name == MODEL_FILE
    assert path.stat().st_size > 10_000_000


def test_parse_metrics() -> None:
    text = "# HELP x\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 0\nbad line\n"
    assert parse_metrics(text) == {
        "llamacpp:requests_processing": 2.0,
        "llamacpp:requests_deferred": 0.0,
    }
