"""This machine's half of remote compute: connecting (:mod:`.session`, :mod:`.addresses`, :mod:`.versions`),
calls with liveness checks (:mod:`.calls`), the stand-ins that implement ``engine.protocols``
(:mod:`.proxies`), the wire format (:mod:`.wire`) and the latest-request-only helper (:mod:`.latest`)."""
