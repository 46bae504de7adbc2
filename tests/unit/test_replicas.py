"""Who owns a tier's replica count."""

from __future__ import annotations

import pytest

from zeta_router.controller.replicas import ReplicaBounds, desired_replicas

B = ReplicaBounds(min=1, max=4, initial=2)


@pytest.mark.parametrize(
    ("live", "loop_owns", "loop_desired", "expected"),
    [
        (None, False, None, 2),  # created at initial
        (3, False, None, 3),  # the user's number is kept
        (9, False, None, 4),  # ... within [min, max]
        (0, False, None, 1),
        (3, True, 4, 4),  # the loop's choice, when it owns replicas
        (3, True, 7, 4),  # ... clamped too
        (3, True, None, 3),  # loop has not decided yet: keep what runs
        (None, True, 3, 3),  # recreated at the loop's choice
        (3, False, 1, 3),  # advisory: the recorded choice is not applied
    ],
)
def test_desired_replicas(
    live: int | None, loop_owns: bool, loop_desired: int | None, expected: int
) -> None:
    assert desired_replicas(B, live, loop_owns, loop_desired) == expected
