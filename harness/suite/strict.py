"""The base of every schema of a suite: strict, closed and finite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # strict: a boolean is not an integer, a string is not a number or a boolean (YAML's ``1e-3``
    # is a float: read_yaml_config); every float is finite. Messages: _describe adds what is accepted.
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)
