"""Reading a model server's in-flight gauges (the model-server preStop waits on them)."""

from __future__ import annotations

from zeta_router.router.lifecycle import in_flight

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting_total 99
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""
LLAMACPP = """\
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
llamacpp:requests_deferred 0
"""


def test_in_flight_sums_the_engines_gauges() -> None:
    assert in_flight(VLLM, "vllm") == 6.0
    assert in_flight(LLAMACPP, "llamacpp") == 0.0
    assert in_flight(LLAMACPP, "vllm") is None  # no gauge of that engine
    assert in_flight("", "llamacpp") is None
    assert in_flight("llamacpp:requests_processing NaN-ish\n", "llamacpp") is None
