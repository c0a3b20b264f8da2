"""Run the engines on a GPU machine from this one: a dask scheduler address in place of "this machine".

    from napari_granseg import remote
    session = remote.connect("tcp://127.0.0.1:8786")        # an SSH tunnel to the GPU box (docs/remote.md)
    pred = session.predictor("unsamv2-plus")                  # GranularityPredictor on the worker
    pred.set_image(image); masks, ious, _ = pred.predict([[x, y]], [1], granularity=0.3)
    labels = session.segment(image, points=[(row, col)], granularity=0.3)     # = gs.segment
    labels = session.segment_everything(image, granularity=0.5)              # = gs.segment_everything
    fs = session.fewshot("sansa-universal"); fs.add_reference(img, mask=m); fs.segment(target)

Two halves: :mod:`.client` (this machine: the session, the calls with liveness checks, the proxies that
implement ``engine.protocols`` and the wire format) and :mod:`.server` (the dask actors on the worker, which
run the same engines and calls as this machine). The client never imports the server; it names the actor
classes and dask builds them on the worker. The model lives on the worker (loaded there by name or path),
images travel once, masks come back packed, and a lost worker raises :class:`RemoteError` without touching
anything on this machine. ``napari_granseg.compute.open_predictor(..., where=...)`` is the usual door.
"""
from __future__ import annotations

from .client.addresses import InsecureAddressError, check_address, is_loopback_address
from .client.calls import RemoteError
from .client.latest import LatestOnly
from .client.session import RemoteSession, close_all, connect, model_spec, session_for

__all__ = ["connect", "session_for", "RemoteSession", "RemotePredictor", "RemoteFewShotSegmenter", "RemoteError",
           "InsecureAddressError", "LatestOnly", "check_address", "is_loopback_address", "close_all", "model_spec"]


def __getattr__(name: str):
    if name in ("RemotePredictor", "RemoteFewShotSegmenter"):
        from .client import proxies

        return getattr(proxies, name)
    raise AttributeError(f"module 'napari_granseg.remote' has no attribute {name!r}")
