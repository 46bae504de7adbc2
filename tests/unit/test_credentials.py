"""The rules for sending a Secret's token to a Prometheus (pure); against a real apiserver and a
listener standing in for an attacker's Prometheus: tests/cluster/test_operator_day2.py."""

from __future__ import annotations

import pytest

from zeta_router.autoscale.credentials import URLS_ANNOTATION, SecretPolicy, refusal

URL = "http://prometheus.monitoring:9090"


def test_annotated_secret_goes_only_to_the_urls_it_names() -> None:
    policy = SecretPolicy()
    marked = {URLS_ANNOTATION: f"{URL}/, https://other:9090"}
    assert refusal(policy, "ns", "tok", URL, marked) is None
    assert refusal(policy, "ns", "tok", URL + "/", marked) is None
    why = refusal(policy, "ns", "tok", "http://evil.example:9090", marked)
    assert why is not None
    assert "allows its token to be sent only to" in why
    assert URLS_ANNOTATION in why


@pytest.mark.parametrize("annotations", [None, {}, {URLS_ANNOTATION: " , "}, {"other": URL}])
def test_unmarked_secret_is_refused_naming_the_rule(annotations: dict[str, str] | None) -> None:
    why = refusal(SecretPolicy(), "ns", "tok", URL, annotations)
    assert why is not None
    assert "is not marked for Prometheus credentials" in why
    assert URLS_ANNOTATION in why


def test_allow_list_names_secret_and_url() -> None:
    policy = SecretPolicy.parse("allow-list", [f"ns/tok={URL}"])
    assert refusal(policy, "ns", "tok", URL) is None
    # The annotation does not count under an allow-list.
    assert refusal(policy, "ns", "other", URL, {URLS_ANNOTATION: URL}) is not None
    why = refusal(policy, "ns", "tok", "http://evil:9090")
    assert why is not None
    assert f"allowed only for {URL}" in why
    why = refusal(policy, "elsewhere", "tok", URL)
    assert why is not None
    assert "not in the operator's allow-list" in why


def test_policy_none_reads_nothing() -> None:
    why = refusal(SecretPolicy.parse("none"), "ns", "tok", URL, {URLS_ANNOTATION: URL})
    assert why is not None
    assert "reads no Secrets" in why


@pytest.mark.parametrize(
    ("mode", "allowed", "message"),
    [
        ("annotated", ["ns/tok=http://p:9090"], "not allow-list"),
        ("allow-list", ["ns/tok"], "must look like"),
        ("allow-list", ["tok=http://p:9090"], "must look like"),
        ("allow-list", ["ns/tok=p:9090"], "must look like"),
        ("sometimes", [], "unknown policy"),
    ],
)
def test_bad_policies_are_refused(mode: str, allowed: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecretPolicy.parse(mode, allowed)
