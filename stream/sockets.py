"""ZeroMQ plumbing shared by the transports: endpoints, contexts, binding, CURVE security.

Endpoints are ZeroMQ addresses: ``"tcp://127.0.0.1:5555"``, ``"tcp://127.0.0.1:0"`` (bind to a
free port; the socket's :attr:`~BaseSocket.endpoint` then names the real one), ``"ipc:///path"``
and ``"inproc://name"`` (in-process; both ends must share one ``zmq.Context``, which is why
:data:`None` as context means ``zmq.Context.instance()``). Binding defaults to the loopback
interface; binding another interface without CURVE is allowed but logged as a warning.

CURVE encryption and authentication is off by default. The binding side is normally the server
(:class:`CurveConfig`: its secret key and a folder of allowed client public keys), the connecting
side the client (:class:`CurveClientConfig`). Make keys with ``zmq.auth.create_certificates(dir,
name)``, which writes ``name.key`` (public) and ``name.key_secret`` (public + secret). One
``zmq.auth.thread.ThreadAuthenticator`` per context serves every server socket of that context;
the allowed keys are read when a server socket is created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq

__all__ = [
    "DEFAULT_HOST",
    "tcp_endpoint",
    "check_endpoint",
    "CurveConfig",
    "CurveClientConfig",
    "BaseSocket",
]

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound="BaseSocket")

#: Interface that :func:`tcp_endpoint` binds to unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
_SCHEMES = ("tcp", "ipc", "inproc")


def tcp_endpoint(port: int = 0, host: str = DEFAULT_HOST) -> str:
    """``"tcp://HOST:PORT"``; port 0 binds to a free port chosen by the system."""
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port: expected 0..65535, got {port}")
    return f"tcp://{host}:{int(port)}"


def check_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if it looks like a ZeroMQ address, else raise ValueError."""
    scheme, sep, rest = str(endpoint).partition("://")
    if not sep or scheme not in _SCHEMES or not rest:
        raise ValueError(
            "endpoint: expected 'tcp://HOST:PORT', 'ipc://PATH' or 'inproc://NAME', "
            f"got {endpoint!r}"
        )
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port == "*" or port.isdigit()):
            raise ValueError(f"endpoint: expected 'tcp://HOST:PORT', got {endpoint!r}")
    return str(endpoint)


def _is_loopback(endpoint: str) -> bool:
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return True  # ipc and inproc never leave the machine
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name


@dataclass(frozen=True)
class CurveConfig:
    """CURVE server side: encrypt, and accept only clients whose public key is in a folder.

    Attributes
    ----------
    server_secret_key_file : ``*.key_secret`` file of this server (from
        ``zmq.auth.create_certificates``); its public key is what clients must be given.
    allowed_client_keys_dir : folder of ``*.key`` public key files of the allowed clients.
    """

    server_secret_key_file: Path
    allowed_client_keys_dir: Path


@dataclass(frozen=True)
class CurveClientConfig:
    """CURVE client side.

    Attributes
    ----------
    client_secret_key_file : ``*.key_secret`` file of this client (its ``*.key`` must be in the
        server's allowed folder).
    server_public_key_file : the server's ``*.key`` (public) file.
    """

    client_secret_key_file: Path
    server_public_key_file: Path


def _load_keys(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected a CURVE key file, got no such file")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: expected a CURVE key file, got an unreadable one ({exc})") from None
    if secret and secret_key is None:
        raise ValueError(f"{path}: expected a secret key file (*.key_secret), got a public key only")
    return public, secret_key


class _Authenticators:
    """One ThreadAuthenticator per context, shared by its CURVE server sockets (ref-counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Any, int]] = {}

    def acquire(self, context: zmq.Context, allowed_dir: Path) -> str:
        """Start (or reuse) the context's authenticator; return the ZAP domain for ``allowed_dir``."""
        from zmq.auth.thread import ThreadAuthenticator

        allowed = Path(allowed_dir).resolve()
        if not allowed.is_dir():
            raise ValueError(f"{allowed_dir}: expected a folder of allowed client *.key files")
        domain = "tiltstream-" + hashlib.sha1(str(allowed).encode()).hexdigest()[:16]
        with self._lock:
            auth, users = self._running.get(id(context), (None, 0))
            if auth is None:
                auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".auth"))
                auth.start()
            auth.configure_curve(domain=domain, location=str(allowed))
            self._running[id(context)] = (auth, users + 1)
        logger.info("CURVE: accepting clients whose keys are in %s", allowed)
        return domain

    def release(self, context: zmq.Context) -> None:
        with self._lock:
            auth, users = self._running.get(id(context), (None, 0))
            if auth is None:
                return
            if users <= 1:
                del self._running[id(context)]
                auth.stop()
            else:
                self._running[id(context)] = (auth, users - 1)


_AUTH = _Authenticators()


class BaseSocket:
    """One ZeroMQ socket, bound or connected, usable as a context manager.

    Parameters
    ----------
    socket_type : ``zmq.PUSH``, ``zmq.PULL``, ``zmq.XPUB``, ``zmq.SUB``, ...
    endpoint : address to bind or connect, see the module docstring.
    bind : bind (True) or connect (False).
    context : ZeroMQ context; None uses ``zmq.Context.instance()`` (or a private one when
        ``own_context``).
    curve : CURVE server or client settings, or None for plain sockets.
    options : socket options set before binding/connecting.
    linger_ms : how long :meth:`close` keeps undelivered messages, milliseconds.
    own_context : with ``context=None`` and a non-inproc endpoint, create a private context and
        terminate it on :meth:`close`, which then waits (up to ``linger_ms``) until queued messages
        are handed to the network.
    bind_retry_s : how long to retry a bind whose address is still held by a just-closed socket.
    """

    def __init__(
        self,
        socket_type: int,
        endpoint: str,
        *,
        bind: bool,
        context: zmq.Context | None = None,
        curve: CurveConfig | CurveClientConfig | None = None,
        options: dict[int, Any] | None = None,
        linger_ms: int = 0,
        own_context: bool = False,
        bind_retry_s: float = 2.0,
    ) -> None:
        check_endpoint(endpoint)
        if curve is not None and not zmq.has("curve"):
            raise RuntimeError("CURVE requested, but this libzmq has no CURVE support (pip install pyzmq)")
        self._owns_context = context is None and own_context and not endpoint.startswith("inproc://")
        if self._owns_context:
            self.context = zmq.Context()
        else:
            self.context = context if context is not None else zmq.Context.instance()
        self.linger_ms = int(linger_ms)
        self._auth_context: zmq.Context | None = None
        self._socket = self.context.socket(socket_type)
        try:
            self._socket.setsockopt(zmq.LINGER, self.linger_ms)
            for option, value in (options or {}).items():
                self._socket.setsockopt(option, value)
            self._apply_curve(curve)
            if bind:
                self._bind(endpoint, bind_retry_s)
                self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
                if curve is None and not _is_loopback(endpoint):
                    logger.warning(
                        "%s bound without CURVE: anyone who can reach it may connect",
                        self.endpoint,
                    )
            else:
                self._socket.connect(endpoint)
                self.endpoint = endpoint
        except BaseException:
            self._release()
            raise
        self.bound = bool(bind)

    def _apply_curve(self, curve: CurveConfig | CurveClientConfig | None) -> None:
        sock = self._socket
        if isinstance(curve, CurveConfig):
            public, secret = _load_keys(curve.server_secret_key_file, secret=True)
            domain = _AUTH.acquire(self.context, curve.allowed_client_keys_dir)
            self._auth_context = self.context
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
            sock.zap_domain = domain.encode()
        elif isinstance(curve, CurveClientConfig):
            public, secret = _load_keys(curve.client_secret_key_file, secret=True)
            server_public, _ = _load_keys(curve.server_public_key_file, secret=False)
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_serverkey = server_public
        elif curve is not None:
            raise TypeError(
                f"curve: expected CurveConfig, CurveClientConfig or None, got {type(curve).__name__}"
            )

    def _bind(self, endpoint: str, retry_s: float) -> None:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                self._socket.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._socket.closed

    @property
    def socket(self) -> zmq.Socket:
        """The underlying ZeroMQ socket (for polling alongside other sockets)."""
        return self._socket

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket (idempotent). Undelivered messages are kept up to ``linger_ms``."""
        if self._socket.closed:
            return
        self._socket.close(linger=self.linger_ms if linger_ms is None else int(linger_ms))
        self._release()

    def _release(self) -> None:
        if not self._socket.closed:
            self._socket.close(linger=0)
        if self._auth_context is not None:
            _AUTH.release(self._auth_context)
            self._auth_context = None
        if self._owns_context and not self.context.closed:
            self.context.term()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("bound" if self.bound else "connected")
        return f"{type(self).__name__}({self.endpoint!r}, {state})"
