"""``spec.learning``: the router learns each deployment's traffic.

The operator collects outcome labels of routed requests from the routers, refits a correction
of each context's score on a schedule and adopts it only when it routes the most recent labels
better than the model in use (see ``zeta_router.learning`` and docs/routing-quality.md).
These are the user-facing settings (its status is ``api.status.LearningStatus``); the router-side
part travels in the routing configuration (``api.routing.RoutingLearning``).
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import Field, model_validator

from zeta_router.api.fields import DURATION, ProblemsError, SpecModel, duration_seconds

JUDGE_FIELDS: Final = ("{request}", "{reference}", "{candidate}")

DEFAULT_JUDGE_PROMPT: Final = """\
You compare two answers to the same request.

Request:
<<<
{request}
>>>

Reference answer:
<<<
{reference}
>>>

Candidate answer:
<<<
{candidate}
>>>

Is the candidate answer as good as the reference answer for this request: as correct, as \
complete and as useful? Reply with one word: YES or NO."""


class ColdStartSpec(SpecModel):
    """A labelled file to learn from before any traffic has been labelled."""

    config_map: str = Field(
        min_length=1,
        max_length=253,
        description="ConfigMap in the ZetaRouter's namespace holding the file (read once per "
        "change of its resourceVersion; only its hashed form is kept).",
    )
    key: str = Field(
        default="labels.csv",
        min_length=1,
        description="Key of the file in the ConfigMap. A CSV with a 'prompt' column and either "
        "a 'label' column (the larger tier's gain: 1 needed the larger tier, 0 the smaller one "
        "did as well, down to -1 the smaller one did better) or two True/False columns of a "
        "weak and a strong model, as `zeta-router fit` reads.",
    )
    context: str | None = Field(
        default=None,
        description="Context the labels are for; default: the file's 'context' column, else "
        "every learning context.",
    )


class ShadowLabelSpec(SpecModel):
    """Labels from shadow pairs: the same request answered by two neighbouring tiers."""

    judge: Literal["agreement", "largest-tier"] = Field(
        default="agreement",
        description="How a pair is judged. agreement: token overlap of the two answers (the "
        "larger tier's gain is 1 - agreement). largest-tier: the largest tier is asked whether "
        "the smaller tier's answer is as good as its own (gain 0 for YES, 1 for NO); costs one "
        "more request on the largest tier per pair.",
    )
    judge_prompt: str | None = Field(
        default=None,
        max_length=8192,
        description="Prompt of the largest-tier judge, with the placeholders {request}, "
        "{reference} (the larger tier's answer) and {candidate} (the smaller tier's). "
        "Default: see docs/routing-quality.md. Its first word must answer YES or NO.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.judge_prompt is not None:
            missing = [f for f in JUDGE_FIELDS if f not in self.judge_prompt]
            if missing:
                raise ProblemsError([("judgePrompt", f"missing the placeholders {missing}")])
        return self


class LearningSources(SpecModel):
    """Where outcome labels come from; each is optional."""

    feedback: bool = Field(
        default=True,
        description="Client scores posted to /v1/feedback (any replica accepts them) for answers "
        "of a tier below the largest become labels (the larger tier's gain is 1 - score).",
    )
    shadow: ShadowLabelSpec | None = Field(
        default=None,
        description="Shadow pairs become labels (needs router.shadowSampleRate > 0). While "
        "learning, a sampled answer of the largest tier is shadowed to the tier below it as "
        "well, so labels cover requests routed to every tier.",
    )
    cold_start: ColdStartSpec | None = Field(
        default=None, description="A labelled file for a cold start."
    )


class LearningSpec(SpecModel):
    """Learn each context's traffic: a correction of the routing score from outcome labels."""

    enabled: bool = Field(default=False, description="Collect labels and refit.")
    mode: Literal["advisory", "apply"] = Field(
        default="advisory",
        description="advisory: refit and report in the status and Events, adopt nothing; "
        "apply: adopt a model that beats the one in use on the held-out recent labels.",
    )
    model: Literal["learned", "prior"] = Field(
        default="learned",
        description="learned: routers add the adopted correction to the prior scorer. prior: "
        "roll back, routers score with the prior alone (the adopted models are kept, and "
        "come back when set to learned; nothing new is adopted meanwhile).",
    )
    contexts: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Contexts that learn; default: all.",
    )
    interval: str = Field(
        default="10m",
        pattern=DURATION,
        description="How often labels are collected and each context refitted (at least 5s).",
    )
    min_labels: int = Field(
        default=200,
        ge=30,
        le=1_000_000,
        description="Labels a context needs before it is refitted.",
    )
    max_labels: int = Field(
        default=20_000,
        ge=100,
        le=200_000,
        description="Most recent labels kept per context (older ones are forgotten).",
    )
    held_out_share: float = Field(
        default=0.2,
        gt=0.0,
        lt=0.9,
        description="Share of the most recent labels held out to judge a candidate against the "
        "model in use (at least 50 labels, down to 20 when minLabels is small; a candidate is "
        "judged only once they hold enough evidence: ties count for none).",
    )
    keep_share: bool = Field(
        default=True,
        description="When a model is adopted, move its scores so that as many recent requests "
        "pass each context's first cut point as before: learning changes which requests go to "
        "the larger tier, not how many (that stays with the thresholds and the control loop). "
        "false: the learned scores stand as fitted, and the large-tier share can move with them.",
    )
    min_gain: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="A candidate's held-out APGR must beat the model in use by more than this.",
    )
    sample_rate: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of a learning context's requests whose hashed sample the routers "
        "keep (a label can only be used for a sampled request).",
    )
    max_samples: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="Most samples one router keeps (oldest dropped first).",
    )
    sample_ttl: str = Field(
        default="6h",
        pattern=DURATION,
        description="How long a router keeps a sample waiting for its label and collection.",
    )
    sources: LearningSources = Field(
        default_factory=LearningSources, description="Where labels come from."
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)

    @property
    def sample_ttl_seconds(self) -> float:
        return duration_seconds(self.sample_ttl)

    def learns(self, context: str) -> bool:
        return self.enabled and (self.contexts is None or context in self.contexts)


def learning_problems(
    learning: LearningSpec, contexts: list[str], shadow_rate: float, tiers: int
) -> list[tuple[str, str]]:
    """Cross-field checks of ``spec.learning`` (paths relative to ``spec``)."""
    problems: list[tuple[str, str]] = []
    if duration_seconds(learning.interval) < 5.0:
        problems.append(("learning.interval", f"{learning.interval} is shorter than 5s"))
    if duration_seconds(learning.sample_ttl) < 60.0:
        problems.append(("learning.sampleTtl", f"{learning.sample_ttl} is shorter than 1m"))
    for i, name in enumerate(learning.contexts or []):
        if name not in contexts:
            problems.append(
                (
                    f"learning.contexts[{i}]",
                    f"{name!r} is not a context (contexts: {', '.join(contexts)})",
                )
            )
    cold = learning.sources.cold_start
    if cold is not None and cold.context is not None and cold.context not in contexts:
        problems.append(
            (
                "learning.sources.coldStart.context",
                f"{cold.context!r} is not a context (contexts: {', '.join(contexts)})",
            )
        )
    if learning.enabled and learning.sources.shadow is not None and shadow_rate <= 0.0:
        problems.append(
            ("learning.sources.shadow", "needs router.shadowSampleRate > 0 to produce pairs")
        )
    if learning.enabled and tiers < 2:
        problems.append(("learning.enabled", "needs at least two tiers"))
    if learning.max_labels < learning.min_labels:
        problems.append(
            (
                "learning.maxLabels",
                f"{learning.max_labels} is below minLabels {learning.min_labels}",
            )
        )
    return problems
