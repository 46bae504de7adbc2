"""What the operator, the control loop and the routers know about each model-server engine: the
metrics it exports, in one place.

vLLM renamed its KV-cache gauge in 0.9 (``vllm:gpu_cache_usage_perc`` became
``vllm:kv_cache_usage_perc``; later releases hide the old name): both are read.
llama.cpp's server exports its gauges only when started with ``--metrics`` (the operator
renders it).
"""

from __future__ import annotations

from typing import Final

VLLM_WAITING: Final = "vllm:num_requests_waiting"
VLLM_RUNNING: Final = "vllm:num_requests_running"
VLLM_KV_CACHE: Final = "vllm:kv_cache_usage_perc"
VLLM_KV_CACHE_OLD: Final = "vllm:gpu_cache_usage_perc"
VLLM_TTFT_BUCKET: Final = "vllm:time_to_first_token_seconds_bucket"
LLAMACPP_WAITING: Final = "llamacpp:requests_deferred"
LLAMACPP_RUNNING: Final = "llamacpp:requests_processing"
LLAMACPP_DECODES: Final = "llamacpp:n_decode_total"
VLLM_PROMPT_TOKENS: Final = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS: Final = "vllm:generation_tokens_total"

ENGINE_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "vllm": (VLLM_WAITING, VLLM_RUNNING, VLLM_KV_CACHE, VLLM_KV_CACHE_OLD, VLLM_TTFT_BUCKET),
    "llamacpp": (LLAMACPP_WAITING, LLAMACPP_RUNNING),
}
"""Every model-server metric the control loop and the dashboard read, by engine."""

IN_FLIGHT: Final[dict[str, tuple[str, ...]]] = {
    "vllm": (VLLM_WAITING, VLLM_RUNNING),
    "llamacpp": (LLAMACPP_WAITING, LLAMACPP_RUNNING),
}
"""The gauges whose sum is the requests a model server holds (queued or being answered)."""
WORK_DONE: Final[dict[str, tuple[str, ...]]] = {
    "vllm": (VLLM_PROMPT_TOKENS, VLLM_GENERATION_TOKENS),
    "llamacpp": (LLAMACPP_DECODES,),
}
"""Counters that move whenever a model server works on a request: a request that came and went
between two reads of the gauges still shows in them."""
