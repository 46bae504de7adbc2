"""The scoring core: request features, the logistic scorer and its weights, and the tier selector.

Pure, cheap and dependency-light (numpy, pydantic): the API layer, the router, the quality tools
and the simulator all build on it, and it imports none of them.
"""
