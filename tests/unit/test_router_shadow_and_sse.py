import json
import logging
from pathlib import Path

import pytest

from zeta_router.router.logs import JsonFormatter
from zeta_router.router.relay import SseRewriter
from zeta_router.router.shadow import JsonlLog, agreement, answer_text, delta_text


@pytest.mark.parametrize(
    ("a", "b", "value", "method"),
    [
        ("Paris", "paris.", 1.0, "exact"),
        ("The answer is B", "the answer is (B)", 1.0, "exact"),
        ("B", "C", 0.0, "exact"),
        ("", "", 1.0, "exact"),
        ("one two three four five", "one two three four five", 1.0, "f1"),
        ("alpha beta gamma delta epsilon", "zeta eta theta iota kappa", 0.0, "f1"),
    ],
)
def test_agreement(a: str, b: str, value: float, method: str) -> None:
    assert agreement(a, b) == (value, method)


def test_agreement_partial_f1() -> None:
    value, method = agreement("red green blue yellow black", "red green blue white grey")
    assert method == "f1"
    assert value == pytest.approx(0.6)


def test_answer_and_delta_text() -> None:
    assert answer_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert answer_text({"choices": [{"text": "yo"}]}) == "yo"
    assert answer_text({"choices": []}) is None
    assert answer_text([1]) is None
    assert delta_text({"choices": [{"delta": {"content": "a"}}]}) == "a"
    assert delta_text({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert delta_text("x") == ""


def test_jsonl_log_is_bounded(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl", max_bytes=300)
    for i in range(40):
        log.append({"i": i, "pad": "x" * 20})
    assert (tmp_path / "s.jsonl").stat().st_size <= 300
    assert (tmp_path / "s.jsonl.1").stat().st_size <= 300
    last = (tmp_path / "s.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["i"] == 39


def _event(model: str, text: str) -> bytes:
    return (
        b"data: " + json.dumps({"model": model, "choices": [{"delta": {"content": text}}]}).encode()
    )


def test_sse_rewriter_handles_any_chunking() -> None:
    stream = b"".join(_event("up", t) + b"\n\n" for t in ("a", "b", "c")) + b"data: [DONE]\n\n"
    for size in (1, 2, 7, 50, len(stream)):
        collected: list[str] = []
        rw = SseRewriter("mine", collected)
        out = b"".join(rw.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        out += rw.flush()
        lines = out.decode().split("\n")
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert [e["model"] for e in events] == ["mine"] * 3
        assert "".join(collected) == "abc"
        assert out.endswith(b"data: [DONE]\n\n")
        assert out.count(b"\n") == stream.count(b"\n")


def test_sse_rewriter_passes_complete_lines_at_once() -> None:
    rw = SseRewriter("m", None)
    assert rw.feed(b": keep-alive\n") == b": keep-alive\n"
    assert rw.feed(b'data: {"mod') == b""  # an unfinished line waits for its end
    assert rw.feed(b'el": "x"}\n').startswith(b'data: {"model":"m"}')


def test_sse_rewriter_leaves_non_json_and_crlf() -> None:
    rw = SseRewriter("m", None)
    assert rw.feed(b"data: not json\r\n") == b"data: not json\r\n"
    assert rw.feed(b'data: {"model":"u"}\r\n') == b'data: {"model":"m"}\r\n'


def test_json_log_lines_carry_extra_fields() -> None:
    rec = logging.LogRecord("zeta", logging.INFO, "f", 1, "hello %s", ("x",), None)
    rec.event = "e1"
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "hello x"
    assert out["event"] == "e1"
    assert out["level"] == "info"
