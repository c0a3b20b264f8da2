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
import re
import threading

__all__ = ["InsecureAddressError", "MalformedAddressError", "SchedulerUnreachableError", "is_loopback_address",
           "check_address", "check_form", "open_client", "TUNNEL_AND_TLS_HELP"]

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


class MalformedAddressError(ValueError):
    """A scheduler address that is not one (spaces, a port that is not a number, no host)."""


class SchedulerUnreachableError(ConnectionError):
    """No dask scheduler answered at an address within the time allowed."""


_HOST = re.compile(r"[A-Za-z0-9._\-]+|[0-9A-Fa-f:.]+")
_EXAMPLE = "give it as 'tcp://HOST:PORT', e.g. 'tcp://127.0.0.1:8786'"


def check_form(address: str) -> None:
    """Refuse an address that is not one, by what is wrong with it, before any security rule or connection."""
    scheme, host, rest = _split(address)
    if scheme == "inproc":
        return
    if any(ch.isspace() for ch in address.strip()):
        raise MalformedAddressError(f"address={address!r} is malformed: it contains spaces; {_EXAMPLE}")
    if not host or not _HOST.fullmatch(host):
        raise MalformedAddressError(f"address={address!r} is malformed: {host!r} is not a host name or IP "
                                    f"address; {_EXAMPLE}")
    port = rest.split("/")[0].lstrip(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise MalformedAddressError(f"address={address!r} is malformed: the port {port!r} is not a number "
                                    f"from 1 to 65535; {_EXAMPLE}")


def open_client(address: str, timeout: float = 10, **client_kwargs):
    """A ``distributed.Client`` to ``address``, or :class:`SchedulerUnreachableError` after ``timeout`` s.

    Why a deadline of our own: a port where something that is not a dask scheduler listens accepts the
    connection and then never completes dask's handshake, and the Client's own timeout does not cover that wait.
    The abandoned attempt ends by itself in its daemon thread.
    """
    from distributed import Client

    box: dict = {}

    def attempt() -> None:
        try:
            # the Client's own timeout ends first, so a refused connection reports its own cause
            box["client"] = Client(address, timeout=max(0.5 * timeout, timeout - 1), set_as_default=False,
                                   **client_kwargs)
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=attempt, name="granseg-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "client" in box:
        return box["client"]
    why = (f"{type(box['error']).__name__}: {box['error']}" if "error" in box
           else "something may answer there, but not a dask scheduler")
    raise SchedulerUnreachableError(
        f"could not reach the dask scheduler at {address} within {timeout:g} s ({why}). Check that the scheduler "
        f"runs on the GPU machine, that the address and port are its own, and with an SSH tunnel that the tunnel "
        f"is open (docs/remote.md).")


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
    check_form(address)
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
