"""`zeta-router demo`: the whole system on one machine, with a live view.

- `stack`: starts and stops the processes (control plane, operator, Prometheus, llama.cpp
  servers, routers), tracking every PID it started.
- `prompts`, `workload`: the mixed workload, sent through the official ``openai`` client.
- `stats`: pure aggregation of request records and cluster samples.
- `view`: the rich live view; `summary`: the summary (JSON, text) and the PNG of a run.
- `cli`: the command line.
"""
