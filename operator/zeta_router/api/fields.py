"""Building blocks of the API models: Kubernetes-shaped parts (resources, env, tolerations),
quantities, durations, name patterns, and the base model (camelCase aliases, unknown fields
rejected).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic.alias_generators import to_camel

DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
CONTEXT_NAME: Final = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
ENV_NAME: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DURATION: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SHA256_HEX: Final = r"^[0-9a-f]{64}$"
QUANTITY: Final = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"

PATTERN_HELP: Final[dict[str, str]] = {
    DNS_LABEL: "must be a DNS label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit",
    CONTEXT_NAME: "must be letters, digits, '_', '-' or '.', starting and ending with a letter "
    "or digit",
    ENV_NAME: "must be a valid environment variable name",
    DURATION: "must be a duration such as '30s', '5m', '1h30m' or '500ms'",
    SHA256_HEX: "must be a SHA-256 digest: 64 lower-case hexadecimal digits",
}

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}


def duration_seconds(value: str) -> float:
    """Seconds in a duration string (``"1m30s"`` -> 90.0). The string must match ``DURATION``."""
    if not re.fullmatch(DURATION, value):
        raise ValueError(PATTERN_HELP[DURATION])
    return float(sum(Decimal(n) * _DURATION_UNIT[u] for n, u in _DURATION_PART.findall(value)))


def _quantity(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a quantity string such as '500m', '4Gi' or '1'")
    if isinstance(value, str) and not re.fullmatch(QUANTITY, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '500m', '4Gi', '1')")
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]
"""A Kubernetes quantity: an integer or a string such as ``"500m"`` or ``"4Gi"``."""

FreeForm = dict[str, Any]
"""An object passed through to Kubernetes as written (the apiserver checks it there)."""

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]


def quantity_value(value: int | str) -> Decimal:
    """The number a quantity stands for (``"500m"`` -> 0.5, ``"2Ki"`` -> 2048)."""
    if isinstance(value, int):
        return Decimal(value)
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([numkMGTPE]i?|)", value)
    if m is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = m.groups()
    if suffix.endswith("i"):
        scale = Decimal(1024) ** ("KMGTPE".index(suffix[0]) + 1)
    else:
        scale = {
            "": Decimal(1),
            "n": Decimal("1e-9"),
            "u": Decimal("1e-6"),
            "m": Decimal("1e-3"),
            "k": Decimal("1e3"),
            "M": Decimal("1e6"),
            "G": Decimal("1e9"),
            "T": Decimal("1e12"),
            "P": Decimal("1e15"),
            "E": Decimal("1e18"),
        }[suffix]
    return Decimal(number) * scale


class ProblemsError(ValueError):
    """Raised by model validators: problems with paths relative to the model validated."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


class SpecModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """The object as it is written in YAML (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------
# Kubernetes-shaped parts


class ResourceRequirements(SpecModel):
    """Compute resources of a container, as in a Pod spec."""

    limits: dict[str, Quantity] | None = Field(
        default=None,
        description="Most of each resource the container may use, e.g. "
        "{cpu: '4', memory: 16Gi, nvidia.com/gpu: 1}.",
    )
    requests: dict[str, Quantity] | None = Field(
        default=None,
        description="Resources reserved for the container when it is scheduled.",
    )


class EnvVar(SpecModel):
    """An environment variable of a container, as in a Pod spec."""

    name: str = Field(pattern=ENV_NAME, min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: FreeForm | None = Field(
        default=None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, ...), as in "
        "a Pod spec.",
    )


class Toleration(SpecModel):
    """A toleration of the tier's pods, as in a Pod spec."""

    key: str | None = Field(default=None, description="Taint key; empty with Exists: any.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (Kubernetes' default: Equal)."
    )
    value: str | None = Field(default=None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty: all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="With NoExecute: how long the pod stays bound after the taint."
    )


class SecretKeyRef(SpecModel):
    """A key of a Secret in the ZetaRouter's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    key: str = Field(default="token", min_length=1, description="Key within the Secret.")


class LocalObjectReference(SpecModel):
    """A reference to an object by name in the ZetaRouter's namespace (as in a Pod spec)."""

    name: str = Field(min_length=1, max_length=253, description="Object name.")
