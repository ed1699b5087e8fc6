"""Run config checked before a run exists.

Dagster's config schema knows types, not ranges: a pydantic constraint (`Field(gt=0)`) on a
resource or op config is only enforced when the run is already executing. Wrapping the definition
in a config mapping (`.configured`) runs that validation while Dagster resolves the run config,
which happens before a run is created (Launchpad, GraphQL, sensors and `execute_in_process` alike),
so a bad value is refused with the field named and no failed run is left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import pydantic
from dagster._core.errors import DagsterInvalidConfigError

# Values of these fields are never echoed back in an error message.
_SECRET_HINTS = ("passphrase", "secret", "password", "api_key")


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        message = err["msg"]
        if not any(h in field for h in _SECRET_HINTS) and "input" in err:
            message += f" (got {err['input']!r})"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def _per_field_defaults(field: dg.Field, values: Mapping[str, Any]) -> dg.Field:
    """The same schema, with the given values as the defaults of the individual fields.

    A ConfigurableResource built with values keeps them only as the default of the whole
    `config` block, so a run that sets one field would silently lose the others (the values that
    came from the environment). Per-field defaults keep them, and the Launchpad shows them.
    """
    shape = field.config_type
    fields = {}
    for name, inner in shape.fields.items():  # type: ignore[attr-defined]
        if name in values:
            default = values[name]
        elif inner.default_provided:
            default = inner.default_value
        else:
            fields[name] = inner
            continue
        fields[name] = dg.Field(
            inner.config_type,
            default_value=default,
            is_required=False,
            description=inner.description,
        )
    return dg.Field(dg.Shape(fields), description=field.description)


def checked_resource(
    resource: dg.ConfigurableResource,
    key: str,
    extra_check: Callable[[Any], None] | None = None,
) -> dg.ResourceDefinition:
    """`resource` as a definition whose run config is validated before launch.

    Each value the resource was built with becomes that field's default. `extra_check` receives
    the validated resource and may raise ValueError for checks across fields.
    """
    base = resource.get_resource_definition()
    schema = base.config_schema.as_field()
    defaults = schema.default_value if schema.default_provided else {}
    cls = type(resource)

    def check(config: dict[str, Any]) -> dict[str, Any]:
        try:
            built = cls(**config)
            if extra_check is not None:
                extra_check(built)
        except pydantic.ValidationError as exc:
            raise DagsterInvalidConfigError(
                f"Invalid run config for resource {key}: {describe_validation_error(exc)}",
                [],
                config,
            ) from None
        except ValueError as exc:
            raise DagsterInvalidConfigError(
                f"Invalid run config for resource {key}: {exc}", [], config
            ) from None
        return config

    return base.configured(check, config_schema=_per_field_defaults(schema, defaults))


def checked_op(op_def: dg.OpDefinition, config_cls: type[dg.Config]) -> dg.OpDefinition:
    """`op_def` (same name) whose `config` is validated by `config_cls` before launch."""

    def check(config: dict[str, Any]) -> dict[str, Any]:
        try:
            config_cls(**config)
        except pydantic.ValidationError as exc:
            raise DagsterInvalidConfigError(
                f"Invalid run config for op {op_def.name}: {describe_validation_error(exc)}",
                [],
                config,
            ) from None
        return config

    return op_def.configured(check, name=op_def.name, config_schema=op_def.config_schema.as_field())
