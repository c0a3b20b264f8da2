"""Which model, named so it can travel (:class:`ModelRef`), and the one copy of each model a process holds.

Why here, next to model loading: the API's models by name, a batch worker's model and a GPU worker's actors all
need "this model, loaded once in this process"; keeping the cache below all of them means none imports
another to get it. Importing this module is light (no torch): the zoo is imported when a model loads.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelRef", "cached_model", "release_cached_models", "cached_model_count"]


@dataclass(frozen=True)
class ModelRef:
    """Which model to load, by name or path (never the model itself: workers load it).

    name: a zoo name, a checkpoint path, or None (the best cached model of the mode's kind, else the demo;
    with ``kind`` given and no name: random weights, for tests only, not reproducible across processes).
    """

    name: str | None = None
    kind: str | None = None
    config: str | None = None
    device: str = "auto"
    base_checkpoint: str | None = None

    def resolved(self, mode: str = "whole") -> "ModelRef":
        """Fix the default model now (on the client), so every worker and the fingerprint agree on it."""
        if self.name is not None or self.kind is not None:
            if self.name is not None and Path(self.name).expanduser().is_file():
                return ModelRef(str(Path(self.name).expanduser().resolve()), self.kind, self.config, self.device,
                                self.base_checkpoint)
            return self
        from .zoo import default_model_name

        return ModelRef(default_model_name("sansa" if mode == "fewshot" else "unsamv2"), None, self.config,
                        self.device, self.base_checkpoint)

    def key(self) -> tuple:
        return (self.name, self.kind, self.config, self.device, self.base_checkpoint)

    def load(self):
        """Load the model (no cache; :func:`cached_model` keeps one per process)."""
        from .zoo import ZOO, load_model

        named = self.name is not None and self.name in ZOO
        return load_model(self.name, kind=None if named else self.kind, config=self.config, device=self.device,
                          base_checkpoint=self.base_checkpoint)


_cache_lock = threading.Lock()
_CACHED: dict[tuple, object] = {}


def cached_model(ref: ModelRef):
    """The :class:`~napari_granseg.models.loaded.LoadedModel` of ``ref`` in this process, loaded once."""
    key = ref.key()
    with _cache_lock:
        if key not in _CACHED:
            _CACHED[key] = ref.load()
        return _CACHED[key]


def release_cached_models() -> None:
    """Forget the models :func:`cached_model` loaded (their predictors and embeddings go with them)."""
    with _cache_lock:
        _CACHED.clear()


def cached_model_count() -> int:
    """How many models this process holds through :func:`cached_model` (one per batch worker process)."""
    with _cache_lock:
        return len(_CACHED)
