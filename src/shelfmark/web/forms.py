"""Form values to the services' schemas: a value the schema refuses is `InvalidInput`, shown
like any other error, never a 500."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shelfmark.errors import InvalidInput

Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], labels: dict[str, str], **values: Any) -> Model:
    """`model` from form values; errors name the fields by their `labels` on the page."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [
            {"field": labels.get(str(e["loc"][0]), str(e["loc"][0])) if e["loc"] else "form",
             "message": e["msg"]}
            for e in exc.errors()
        ]  # fmt: skip
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise InvalidInput(f"Please check the form. {summary}.", errors=errors) from exc
