"""The common base of every API model: strict, camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Unknown fields are errors; keys are camelCase like Kubernetes objects."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: the dotted field path (wire names) and the reason."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{where}: {error['msg']}")
    return lines
