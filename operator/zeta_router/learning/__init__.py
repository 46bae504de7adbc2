"""The operator's learner: collect outcome labels from the routers, refit each context's
correction on a schedule, adopt it only when it routes the most recent labels better, and deliver
it through the routing ConfigMap.

- ``collect``: which routers a ZetaRouter has, and reading their samples and labels (their
  admin port's ``GET /learning/samples``);
- ``cycle``: one interval for one ZetaRouter, pure apart from what it is handed (the joined
  labels, the store, the spec): refits, verdicts, the store to write, the status and Events;
- ``loop``: the kopf daemon that runs it, with its memory per ZetaRouter, and its I/O.

The learning itself (the model, the fit, the held-out check, labels, samples, the join) is in
the scoring core (``zeta_router.scoring.learner``, ``.labels``, ``.samples``), shared with the
routers and with ``zeta-router eval --online``. See docs/routing-quality.md.
"""
