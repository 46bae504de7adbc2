"""The router's feature extractor: every request shape, odd inputs, and the vectorised paths."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeta_router.scoring import features
from zeta_router.scoring.features import FEATURE_NAMES, extract, from_prompt, matrix, vector

MC_PROMPT = """Which of the following is NOT a prime number?
A. 2
B. 3
C. 9
D. 11
Answer:"""


def chat(*messages: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in messages], **extra}


def test_names_are_unique_and_complete() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    f = from_prompt("Hello there")
    assert list(f) == list(FEATURE_NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in f.values())


def test_empty_request_is_all_zero() -> None:
    for body in ({}, {"messages": []}, {"prompt": ""}, {"messages": "nope"}):
        assert set(extract(body).values()) == {0.0}, body


def test_chat_and_completion_agree_on_text() -> None:
    text = "Prove that the square root of 2 is irrational."
    a = extract(chat(("user", text)))
    b = extract({"prompt": text})
    assert a == b
    assert a == from_prompt(text)


def test_size_turns_and_system_prompt() -> None:
    short = from_prompt("Hi")
    long_ = from_prompt("word " * 400)
    assert long_["log_prompt_tokens"] > short["log_prompt_tokens"] > 0
    assert long_["log_prompt_tokens"] == pytest.approx(math.log1p(2000 / 4), rel=1e-6)

    convo = chat(
        ("system", "You are terse. " * 20),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "What is 2+2?"),
    )
    f = extract(convo)
    assert f["log_turns"] == pytest.approx(math.log1p(3))
    assert f["log_system_tokens"] == pytest.approx(math.log1p(len("You are terse. " * 20) / 4))
    # The developer role is a system prompt too.
    g = extract(chat(("developer", "Rules."), ("user", "Hi")))
    assert g["log_system_tokens"] > 0
    assert g["log_turns"] == pytest.approx(math.log1p(1))


def test_content_parts_are_read() -> None:
    parts = [{"type": "text", "text": "Explain why"}, {"type": "image_url", "image_url": {}}]
    assert extract(chat(("user", parts)))["reasoning_cues"] > 0


def test_request_options() -> None:
    base = chat(("user", "Hi"))
    assert extract(base)["log_max_tokens"] == 0.0
    assert extract({**base, "max_tokens": 100})["log_max_tokens"] == pytest.approx(math.log1p(100))
    assert extract({**base, "max_completion_tokens": 50})["log_max_tokens"] == pytest.approx(
        math.log1p(50)
    )
    assert extract({**base, "tools": [{"type": "function"}]})["tools"] == 1.0
    assert extract({**base, "functions": [{"name": "f"}]})["tools"] == 1.0
    assert extract({**base, "tools": []})["tools"] == 0.0
    assert extract({**base, "response_format": {"type": "json_schema"}})["json_output"] == 1.0
    assert extract({**base, "response_format": {"type": "text"}})["json_output"] == 0.0


@pytest.mark.parametrize("bad", [True, -5, float("nan"), float("inf"), "100", None, [1]])
def test_odd_max_tokens_are_ignored(bad: object) -> None:
    assert extract({"prompt": "x", "max_tokens": bad})["log_max_tokens"] == 0.0


def test_code_math_and_reasoning_cues() -> None:
    code = "Fix this:\n```python\ndef f(x):\n    return x + 1;\n```\nand explain why it fails."
    f = from_prompt(code)
    assert f["code_blocks"] == pytest.approx(math.log1p(1))
    assert f["code_lines"] > 0
    assert f["reasoning_cues"] > 0
    plain = from_prompt("Tell me about the weather in spring and the flowers that bloom.")
    assert plain["code_blocks"] == plain["code_lines"] == plain["reasoning_cues"] == 0.0

    math_text = r"Compute $\int_0^1 x^2 dx$ and show that \frac{1}{3} = 0.333..., step by step."
    m = from_prompt(math_text)
    assert m["latex"] > 0
    assert m["digit_share"] > 0
    assert m["math_operators"] > 0
    assert m["reasoning_cues"] == math.log1p(2)  # show that, step by step; not "compute"
    # The phrases of word problems are not reasoning cues (docs/routing-quality.md).
    word_problem = from_prompt("How many apples are left? Calculate what is the value of x.")
    assert word_problem["reasoning_cues"] == 0.0
    assert from_prompt("Is x ≤ y ∧ y ≤ z ⇒ x ≤ z?")["latex"] > 0


def test_quantity_relations_count_the_steps_a_word_problem_states() -> None:
    """Each word relating one amount to another is a step of arithmetic; the numbers are only
    operands, and "each" / "every" quantify things in ordinary requests (docs/routing-quality.md,
    "Math and word problems")."""
    two_steps = from_prompt("Tom has 12 apples. He eats half of them. How many are left?")
    assert two_steps["quantity_relations"] == pytest.approx(math.log1p(2))  # half, left
    seven = from_prompt(
        "Ann has twice as many pens as Bo, and 3 more than Cy. Cy has 20% fewer pens than "
        "Dee, who has 10 percent of the total."
    )
    # twice, more, than, fewer, than, percent, total
    assert seven["quantity_relations"] == pytest.approx(math.log1p(7))
    # The numbers alone, or "each" and "every", are no step.
    assert from_prompt("Add 12, 15, 17 and 30 for each row, every day.")["quantity_relations"] == 0
    assert (
        from_prompt("Explain each inference and why every fraction reduces.")["quantity_relations"]
        == 0.0
    )


def test_multiple_choice_shape() -> None:
    f = from_prompt(MC_PROMPT)
    assert f["mc_options"] == 4.0
    assert f["numeric_options"] == 1.0
    assert f["negations"] > 0
    assert f["log_question_tokens"] == pytest.approx(
        math.log1p(len("Which of the following is NOT a prime number?") / 4)
    )
    assert from_prompt("What is your name?")["mc_options"] == 0.0
    # A list a), b) is parts of a question, not answer options.
    parts = from_prompt("Answer both:\na) what is a group?\nb) what is a ring?")
    assert parts["mc_options"] == 0.0
    assert parts["multi_part"] > 0


def test_compound_options_and_claims() -> None:
    text = (
        "Statement 1 | Every group is abelian. Statement 2 | Every ring is a field.\n"
        "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
    )
    f = from_prompt(text)
    assert f["compound_options"] == 1.0
    assert f["enumerated_claims"] >= math.log1p(2)
    assert f["domain_math"] > 0


def test_question_is_the_last_paragraph_after_a_passage() -> None:
    passage = "This question refers to the following information.\n" + "Some history. " * 80
    text = passage + "\n\nWhat did the author mean?\nA. x\nB. y\nAnswer:"
    f = from_prompt(text)
    assert f["log_question_tokens"] == pytest.approx(
        math.log1p(len("What did the author mean?") / 4)
    )
    assert f["log_prompt_tokens"] > f["log_question_tokens"] + 2


def test_language_and_tokens_of_non_latin_text() -> None:
    zh = "请解释为什么天空是蓝色的"
    f = from_prompt(zh)
    assert f["non_latin"] == pytest.approx(1.0)
    # Roughly one token per CJK character, not one per four.
    assert f["log_prompt_tokens"] == pytest.approx(math.log1p(len(zh)))
    fr = from_prompt("Pourquoi le ciel est-il bleu ? Expliquez en détail.")
    assert fr["non_latin"] == 0.0
    ru = from_prompt("Почему небо голубое?")
    assert ru["non_latin"] == pytest.approx(1.0)


def test_domain_vocabulary() -> None:
    law = from_prompt("The plaintiff sued the defendant for breach of contract in federal court.")
    med = from_prompt(
        "The patient presents with fever and acute renal pain; what is the diagnosis?"
    )
    assert law["domain_law"] > 0
    assert law["domain_medicine"] == 0
    assert med["domain_medicine"] > 0
    assert med["domain_law"] == 0


def test_long_input_is_bounded_but_fully_counted() -> None:
    huge = "The defendant appealed. " * 20_000  # ~480 KB
    f = from_prompt(huge)
    assert f["log_prompt_tokens"] == pytest.approx(math.log1p(len(huge) / 4))
    assert f["domain_law"] > 0


def test_vector_and_matrix_match_extract() -> None:
    prompts = [MC_PROMPT, "Hi", "Prove it.\n1. first\n2. second", ""]
    m = matrix(prompts)
    assert m.shape == (4, len(FEATURE_NAMES))
    for row, p in zip(m, prompts, strict=True):
        assert list(row) == list(from_prompt(p).values())
    body = chat(("system", "s"), ("user", MC_PROMPT), max_tokens=10)
    assert vector(body) == list(extract(body).values())
    assert matrix([]).shape == (0, len(FEATURE_NAMES))


def test_request_text() -> None:
    assert features.request_text(chat(("system", "a"), ("user", "b"))) == ("a\nb", 2)
    assert features.request_text({"prompt": ["x", "y"]}) == ("x\ny", 1)
    assert features.request_text({"prompt": [1, 2, 3]}) == ("", 1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer", "tool", 3])},
    optional={"content": json_values | st.text(max_size=300)},
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(message | json_values, max_size=5) | json_values,
        "prompt": st.text(max_size=300) | st.lists(st.text(max_size=40) | st.integers()),
        "max_tokens": json_values,
        "tools": json_values,
        "response_format": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_any_body_gives_finite_features(body: dict[str, Any]) -> None:
    f = extract(body)
    assert list(f) == list(FEATURE_NAMES)
    assert all(math.isfinite(v) and v >= 0.0 for v in f.values())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_gives_finite_features(text: str) -> None:
    values = np.array(list(from_prompt(text).values()))
    assert np.all(np.isfinite(values))
    assert np.all(values >= 0.0)
