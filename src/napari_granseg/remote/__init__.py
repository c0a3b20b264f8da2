"""Run the engines on a GPU machine from this one: a dask scheduler address in place of "this machine".

    from napari_granseg import remote
    session = remote.connect("tcp://127.0.0.1:8786")        # an SSH tunnel to the GPU box (docs/remote.md)
    pred = session.predictor("unsamv2-plus")                  # GranularityPredictor on the worker
    pred.set_image(image); masks, ious, _ = pred.predict([[x, y]], [1], granularity=0.3)
    labels = session.segment(image, points=[(row, col)], granularity=0.3)     # = gs.segment
    labels = session.segment_everything(image, granularity=0.5)              # = gs.segment_everything
    fs = session.fewshot("sansa-universal"); fs.add_reference(img, mask=m); fs.segment(target)

The model lives on the worker (loaded there by name or path), images travel once, masks come back packed,
and a lost worker raises :class:`RemoteError` without touching anything on this machine.
"""
from __future__ import annotations

from .addresses import InsecureAddressError, MalformedAddressError, check_address, is_loopback_address
from .calls import RemoteError
from .latest import LatestOnly
from .session import RemoteSession, close_all, connect, model_spec, session_for

__all__ = ["connect", "session_for", "RemoteSession", "RemotePredictor", "RemoteFewShotSegmenter", "RemoteError",
           "InsecureAddressError", "MalformedAddressError", "LatestOnly", "check_address", "is_loopback_address", "close_all", "model_spec"]


def __getattr__(name: str):
    if name in ("RemotePredictor", "RemoteFewShotSegmenter"):
        from . import proxies

        return getattr(proxies, name)
    raise AttributeError(f"module 'napari_granseg.remote' has no attribute {name!r}")
