"""Which scheduler addresses are safe to connect to, and what to do instead when one is not.

A dask scheduler has no password: whoever reaches its port can run any program as the worker's user, and a
plain ``tcp://`` connection carries images and masks unencrypted. So a plain address is accepted only when it
points at this machine (loopback: ``127.0.0.0/8``, ``::1``, ``localhost``) -- which is also what an SSH
tunnel looks like -- or when the caller says explicitly that the network is trusted. Encrypted schemes
(``tls://``, ``wss://``) need a :class:`distributed.Security` with the certificates. No name is looked up
and no connection is attempted before the address has passed these checks.
"""
from __future__ import annotations

import ipaddress

__all__ = ["InsecureAddressError", "is_loopback_address", "check_address", "TUNNEL_AND_TLS_HELP"]

ENCRYPTED_SCHEMES = ("tls", "wss")
PLAIN_SCHEMES = ("tcp", "ws", "ucx")

TUNNEL_AND_TLS_HELP = """Two safe setups (docs/remote.md has them step by step):
  1. SSH tunnel. On the GPU machine:
       dask scheduler --host 127.0.0.1 --port 8786
       dask worker tcp://127.0.0.1:8786 --host 127.0.0.1 --nworkers 1 --nthreads 1
     On this machine (keep it open):
       ssh -N -L 8786:127.0.0.1:8786 you@gpu-machine
     then connect to 'tcp://127.0.0.1:8786'.
  2. Mutual TLS. Start the scheduler and worker with --tls-ca-file/--tls-cert/--tls-key, then
       from distributed import Security
       sec = Security(tls_ca_file='ca.pem', tls_client_cert='laptop.pem', tls_client_key='laptop.key',
                      require_encryption=True)
       napari_granseg.remote.connect('tls://gpu-machine:8786', security=sec)
If this network is private and trusted, pass allow_insecure_remote=True."""


class InsecureAddressError(ValueError):
    """A scheduler address that would expose the worker or the images; the message says what to do."""


def _split(address: str) -> tuple[str, str, str]:
    """(scheme, host, rest) without resolving anything; a bare 'host:port' means tcp as in dask."""
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address={address!r}: give the dask scheduler's address as a string, e.g. "
                         f"'tcp://127.0.0.1:8786'")
    address = address.strip()
    scheme, sep, loc = address.partition("://")
    if not sep:
        scheme, loc = "tcp", address
    scheme = scheme.lower()
    if loc.startswith("["):  # [::1]:8786
        host, _, rest = loc[1:].partition("]")
    elif loc.count(":") > 1:  # a bare IPv6 address without port
        host, rest = loc, ""
    else:
        host, _, rest = loc.partition(":")
    return scheme, host.split("/")[0], rest


def is_loopback_address(address: str) -> bool:
    """True when ``address`` points at this machine (loopback IP, ``localhost``, or ``inproc://``)."""
    scheme, host, _ = _split(address)
    if scheme == "inproc":
        return True
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not resolved here (that would already contact the network)
        return False


def check_address(address: str, allow_insecure_remote: bool = False, security=None) -> str:
    """Return ``address`` (with an explicit scheme) if connecting to it is safe, else raise.

    Raises :class:`InsecureAddressError` for a plain-text address on another machine unless
    ``allow_insecure_remote``; a ValueError for an encrypted scheme without ``security`` or an unknown
    scheme.
    """
    scheme, host, _ = _split(address)
    full = address.strip() if "://" in address else f"tcp://{address.strip()}"
    if not host and scheme != "inproc":
        raise ValueError(f"address={address!r} has no host: use e.g. 'tcp://127.0.0.1:8786'")
    if scheme in ENCRYPTED_SCHEMES:
        if security is None:
            raise ValueError(f"address={address!r} is encrypted ({scheme}://) but no security= was given: pass "
                             f"distributed.Security(tls_ca_file=..., tls_client_cert=..., tls_client_key=..., "
                             f"require_encryption=True) with this machine's certificate (see docs/remote.md)")
        return full
    if scheme == "inproc" or (scheme in PLAIN_SCHEMES and is_loopback_address(full)):
        return full
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(f"address={address!r}: unknown scheme {scheme!r}; use tcp:// (this machine or an SSH "
                         f"tunnel) or tls:// (mutual TLS)")
    if allow_insecure_remote:
        return full
    raise InsecureAddressError(
        f"refusing to connect to {full}: it is not on this machine and {scheme}:// is neither encrypted nor "
        f"authenticated. A dask scheduler has no password, so anyone who can reach that port can run programs "
        f"as the worker's user, and your images would travel in clear text.\n{TUNNEL_AND_TLS_HELP}")
