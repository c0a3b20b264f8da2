"""Reading training configs: dataclass <-> dict <-> YAML/JSON file, and ``--set key=value`` overrides.

Shared by the UnSAMv2 and SANSA trainers so both accept the same files and flags.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

__all__ = ["ConfigIO", "apply_set_overrides"]


class ConfigIO:
    """Mixin for dataclass configs. Subclasses set ``_what`` (used in the unknown-option error)."""

    _what = "training"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls._what} training option(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path):
        """Read a YAML (.yaml/.yml) or JSON file of the dataclass fields."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict(data)


def apply_set_overrides(data: dict[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to ``data``; values are parsed as JSON when they can be, else kept as text."""
    for item in items:
        key, _, raw = item.partition("=")
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
    return data
