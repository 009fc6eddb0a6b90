"""Human-readable documentation of a settings model: variable names, defaults, meanings.

Used by every service's `--help` and by `scripts/config_table.py`, which writes the
README's configuration table.
"""

from dataclasses import dataclass

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kubemta_common.config_types import ListenAddress, format_duration
from kubemta_common.settings import ServiceSettings

_DURATION_HINTS = (
    "timeout",
    "lifetime",
    "after",
    "ttl",
    "interval",
    "seconds",
    "schedule",
    "delay",
    "window",
    "duration",
)


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One environment variable of a service."""

    variable: str
    default: str
    description: str


def _is_duration(name: str) -> bool:
    return any(hint in name for hint in _DURATION_HINTS)


def format_default(name: str, field: FieldInfo) -> str:
    """The default value of a settings field, spelled as one would write it in the environment."""
    if field.default_factory is not None:
        if name == "hostname":
            return "the host's FQDN"
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, ListenAddress):
        return str(value)
    if isinstance(value, list):
        items = [format_duration(v) if isinstance(v, float) and _is_duration(name) else str(v) for v in value]
        return ",".join(items) or "(empty)"
    if isinstance(value, float) and _is_duration(name):
        return format_duration(value)
    return "(empty)" if value in ("", None) else str(value)


def describe_settings(model: type[ServiceSettings]) -> list[SettingDoc]:
    """Every variable the model reads, in declaration order."""
    return [
        SettingDoc(f"KUBEMTA_{name.upper()}", format_default(name, field), field.description or "")
        for name, field in model.model_fields.items()
    ]
