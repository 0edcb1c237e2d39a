"""Field references generated from the configuration models, so the documentation cannot drift.

``python -m vitrina.reference > docs/reference.md`` rewrites the page; a test checks it is current.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >="}


def _type(annotation: Any) -> str:
    """A readable type: ``'loo' or 'temporal'``, ``int >= 1 or 'all'``, ``list of ModelRun``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        bounds = _constraints_of(args[1:])
        return _type(args[0]) + (f" {bounds}" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join("not set" if a is type(None) else _type(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {_type(args[0])} -> {_type(args[1])}"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see its table)"
    if value is None:
        return "not set"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`"


def _constraints_of(metadata: Any) -> str:
    out = []
    for meta in metadata:
        if isinstance(meta, FieldInfo):
            out.append(_constraints_of(meta.metadata))
            continue
        for attr, sign in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return ", ".join(out)


def fields_markdown(model: type[BaseModel], key: str) -> str:
    """A markdown section for ``model``: its docstring and one row per field."""
    lines = [f"## {model.__name__}", "", f"Where: {key}", ""]
    doc = inspect.getdoc(model)
    if doc:
        lines += [doc, ""]
    lines += ["| field | type | default | constraint | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        typ = _type(field.annotation).replace("|", "\\|")
        lines.append(
            f"| `{name}` | `{typ}` | {_default(field)} | {_constraints_of(field.metadata)} | {meaning} |"
        )
    return "\n".join(lines) + "\n"


def sections() -> list[tuple[type[BaseModel], str]]:
    """Every configuration model a user writes by hand, with where it is written."""
    from vitrina.evaluation.config import BenchmarkConfig, ModelRun
    from vitrina.experiments.design import DecisionRule, DesignSpec
    from vitrina.experiments.metrics import MetricSpec

    return [
        (BenchmarkConfig, "top-level keys of `bench.toml` (`vitrina benchmark --config`); flags override"),
        (ModelRun, "each `[[models]]` table of `bench.toml`"),
        (DesignSpec, "the A/B design spec JSON (`vitrina ab template`, `vitrina ab design SPEC`)"),
        (MetricSpec, "`primary` and each of `guardrails` in the design spec"),
        (DecisionRule, "`decision` in the design spec"),
    ]


def reference_markdown() -> str:
    head = (
        "# Configuration reference\n\n"
        "Generated from the configuration models by `python -m vitrina.reference` (a test keeps it "
        "current). Unknown keys are refused everywhere.\n\n"
    )
    return head + "\n".join(fields_markdown(model, key) for model, key in sections())


if __name__ == "__main__":
    print(reference_markdown(), end="")
