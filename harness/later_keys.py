"""Keys added to a config after studies were stored: left out of its dumps while they hold their default.

A run's identity is the hash of its config's dump (:meth:`harness.suite.Suite.run_config_hash`), so a new
key with a default would change every stored run's identity although no number changes. A model lists
its later keys with their defaults, ``_dump = later_keys({"frame_sampling": "first"})``; a suite that sets
one to another value has it in its dump and so in its identity, as it must.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import model_serializer


def later_keys(defaults: Mapping[str, Any]) -> Any:
    """A pydantic wrap serializer leaving out each key of ``defaults`` that holds its default value."""

    @model_serializer(mode="wrap")
    def _dump(self: Any, handler: Any) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for key, default in defaults.items():
                if key in out and out[key] == default:
                    del out[key]
        return out

    return _dump
