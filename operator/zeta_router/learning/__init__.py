"""Learning each deployment's traffic: a per-context correction of the routing score, learned
from outcome labels.

- ``learner``: refit a correction and decide whether to adopt it (pure; shared by the operator
  and ``zeta-router eval --online``);
- ``labels``: how each label source (client scores, shadow pairs, a labelled file) becomes a
  label in [0, 1].

The scoring side (hashed n-grams, the serialised correction, the scorer that applies it) is in
``zeta_router.scoring``. See docs/routing-quality.md.
"""
