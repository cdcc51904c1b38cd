"""Targets: the servers the suite checks, started on free loopback ports.

Each launcher starts a real server as a subprocess whose PID is the server's own
(``python -m uvicorn``, ``python -m hypercorn``, ``nginx -g 'daemon off;'``), hands
it an already-listening socket where the server supports that (no port races), and
stops it with SIGTERM, then SIGKILL. :func:`start_target` builds a :class:`Target`
by name; :data:`TARGETS` lists the names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clients import H1Client, H2Client
from .metrics import ActiveMetric

if TYPE_CHECKING:  # aioquic is imported only when HTTP/3 is used
    from .clients.h3 import H3Client, QuicTLS

DEFAULT_APP = "conformance.target_app:app"
HOST = "127.0.0.1"
#: Where Debian installs nginx; ``$PATH`` is searched too.
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class TargetUnavailable(RuntimeError):
    """The target cannot run here (e.g. no nginx binary); its cases are skipped."""


class TargetFailed(RuntimeError):
    """The target's server did not start (the message quotes its log)."""


@dataclass(slots=True)
class ServerProcess:
    """A server subprocess and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The server's own PID."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; reaps the process. Worker
        processes it started (hypercorn and nginx fork workers) share its process
        group, which was created for it: whatever is left of that group is killed too."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


@dataclass(slots=True)
class Endpoint:
    """Where to open a connection: host, port and an optional TLS context factory."""

    host: str
    port: int
    tls: Callable[[], ssl.SSLContext] | None = None
    #: HTTP/3: the UDP port QUIC listens on (None: no HTTP/3 here) and how to verify it.
    quic_port: int | None = None
    quic_tls: QuicTLS | None = None

    def h1(self, **kw: Any) -> H1Client:
        """A new HTTP/1.1 connection."""
        return H1Client(self.host, self.port, tls=self.tls() if self.tls else None, **kw)

    def h2(self, **kw: Any) -> H2Client:
        """A new HTTP/2 connection (h2c prior knowledge, or TLS + ALPN)."""
        return H2Client(self.host, self.port, tls=self.tls() if self.tls else None, **kw)

    def h3(self, **kw: Any) -> H3Client:
        """A new HTTP/3 connection (QUIC on ``quic_port``)."""
        from .clients.h3 import H3Client

        if self.quic_port is None:
            raise TargetUnavailable(f"{self.host}:{self.port} has no HTTP/3 (QUIC) port")
        return H3Client(self.host, self.quic_port, tls=self.quic_tls, **kw)


@dataclass(slots=True)
class Target:
    """A server under test, as the cases see it."""

    name: str
    #: "h1", "h2" or "h3": the protocol the cases speak to it.
    protocol: str
    endpoint: Endpoint
    #: What runs behind it (for the report).
    server: str
    #: The suite's target app (``/stream``, ``/utf8``…) is served.
    app_endpoints: bool = True
    #: Where ``/_hooks/streams`` is served (None: cases needing hooks skip).
    hooks: Endpoint | None = None
    #: A reverse proxy sits in front (its name), e.g. "nginx".
    proxy: str | None = None
    #: For an external URL: the request to make.
    path: str = "/"
    method: str = "GET"
    body: bytes = b""
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    #: The demo app is mounted at /demo.
    demo: bool = False
    processes: list[ServerProcess] = field(default_factory=list)
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: Default seconds one socket read may block (an external LLM stream may pause long).
    read_timeout: float = 10.0
    #: The gauge of running generations (``--active-metric``), for cancellation from outside.
    active_metric: ActiveMetric | None = None
    #: Told that a reverse proxy sits in front (``--behind-proxy``).
    behind_proxy: bool = False
    #: At most this many of the suite's cases at once against this target (None: no
    #: limit beyond ``--jobs``); 1 for a server that generates one answer at a time.
    concurrency: int | None = None
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def h1(self, **kw: Any) -> H1Client:
        """A new HTTP/1.1 connection to the target."""
        kw.setdefault("timeout", self.read_timeout)
        return self.endpoint.h1(**kw)

    def h2(self, **kw: Any) -> H2Client:
        """A new HTTP/2 connection to the target."""
        kw.setdefault("timeout", self.read_timeout)
        return self.endpoint.h2(**kw)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per key for this target (concurrent callers wait for the
        first); an exception it raised is raised again to every caller."""
        with self._memo_lock:
            entry = self._memo.get(key)
            if entry is None:
                entry = self._memo[key] = _Once()
        return entry.get(make)

    def h3(self, **kw: Any) -> H3Client:
        """A new HTTP/3 connection to the target."""
        return self.endpoint.h3(**kw)

    def hook_streams(self, labels: list[str], timeout: float = 5.0) -> dict[str, Any]:
        """GET ``/_hooks/streams?label=…`` from the target app (over HTTP/1.1)."""
        if self.hooks is None:
            raise TargetUnavailable(f"{self.name} has no hook endpoint")
        with self.hooks.h1(timeout=timeout) as c:
            c.request("GET", "/_hooks/streams?label=" + ",".join(labels))
            resp = c.read_response(deadline=time.monotonic() + timeout)
        if resp.status != 200:
            raise RuntimeError(f"hook endpoint answered {resp.status}: {resp.body[:200]!r}")
        return json.loads(resp.body)

    def alive(self) -> str | None:
        """None if every server process runs, else which one died (with its log)."""
        for proc in self.processes:
            if not proc.alive():
                return f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}: {proc.log_tail(600)}"
        return None

    def logs(self) -> str:
        """The tails of all server logs."""
        return "\n".join(f"--- {p.name} (pid {p.pid})\n{p.log_tail()}" for p in self.processes)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every process (proxy first; each gets ``timeout`` seconds after SIGTERM)
        and remove the work directory."""
        for proc in reversed(self.processes):
            proc.stop(timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _Once:
    """A value computed once, by the first caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def get(self, make: Callable[[], Any]) -> Any:
        with self._lock:
            if not self._done:
                try:
                    self._value = make()
                except BaseException as exc:
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error
        return self._value


# ---------------------------------------------------------------- helpers
def listening_socket(host: str = HOST) -> socket.socket:
    """A socket bound to a free loopback port and listening (inheritable)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bound_udp_socket(host: str = HOST) -> socket.socket:
    """A UDP socket bound to a free loopback port (inheritable), for a QUIC server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.set_inheritable(True)
    return sock


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (for servers that cannot take a socket)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _spawn(
    name: str, argv: list[str], workdir: Path, pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None
) -> ServerProcess:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            env=_child_env(env),
            start_new_session=True,  # a Ctrl-C of the suite does not hit the servers first
        )
    finally:
        log.close()
    return ServerProcess(name, popen, log_path)


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a server: ours, plus ``extra``, with this package's parent
    directory on PYTHONPATH so ``conformance.target_app`` imports from any cwd."""
    env = {**os.environ, **(extra or {})}
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([root] if root not in paths else []))
    return env


def wait_ready(proc: ServerProcess, endpoint: Endpoint, path: str, timeout: float = 60.0) -> None:
    """Poll ``path`` over HTTP/1.1 until it answers (any status), or raise TargetFailed."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise TargetFailed(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with endpoint.h1(timeout=2.0) as c:
                c.request("GET", path)
                resp = c.read_response(deadline=time.monotonic() + 2.0)
                if resp.status is not None:
                    return
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise TargetFailed(f"{proc.name} not ready after {timeout:.0f} s ({last}):\n{proc.log_tail()}")


@dataclass(slots=True)
class Certs:
    """A throwaway CA and a localhost certificate (from trustme), as files."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the throwaway CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


def make_certs(workdir: Path) -> Certs:
    """Generate a CA and a certificate for 127.0.0.1/localhost at run time."""
    try:
        import trustme
    except ImportError as exc:
        raise TargetUnavailable("the h2-tls target needs the 'trustme' package (pip install trustme)") from exc
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certs = Certs(workdir / "cert.pem", workdir / "key.pem", workdir / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(certs.cert_file))
    for extra in cert.cert_chain_pems[1:]:
        with open(certs.cert_file, "ab") as f:
            f.write(extra.bytes())
    cert.private_key_pem.write_to_path(str(certs.key_file))
    ca.cert_pem.write_to_path(str(certs.ca_file))
    return certs


def find_nginx() -> str | None:
    """The nginx binary, or None."""
    for path in NGINX_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("nginx")


# ---------------------------------------------------------------- launchers
def start_uvicorn(
    workdir: Path,
    app: str = DEFAULT_APP,
    name: str = "uvicorn",
    env: dict[str, str] | None = None,
    http: str = "h11",
) -> tuple[ServerProcess, Endpoint]:
    """uvicorn (asyncio; ``http``: h11, or httptools) on a free port."""
    sock = listening_socket()
    try:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--fd",
            str(sock.fileno()),
            "--http",
            http,
            "--loop",
            "asyncio",
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "2",
        ]
        proc = _spawn(name, argv, workdir, pass_fds=(sock.fileno(),), env=env)
        endpoint = Endpoint(HOST, sock.getsockname()[1])
    finally:
        sock.close()
    return proc, endpoint


def start_hypercorn(
    workdir: Path,
    app: str = DEFAULT_APP,
    *,
    worker: str = "asyncio",
    certs: Certs | None = None,
    name: str = "hypercorn",
    env: dict[str, str] | None = None,
    quic: bool = False,
) -> tuple[ServerProcess, Endpoint]:
    """hypercorn on a free port: HTTP/1.1 and h2c prior knowledge on one socket, or
    TLS with ALPN (h2, http/1.1) when ``certs`` are given; with ``quic`` (needs
    ``certs``) also HTTP/3 on a bound UDP socket of its own (``--quic-bind``)."""
    if quic and certs is None:
        raise ValueError("HTTP/3 needs TLS: pass certs")
    sock = listening_socket()
    udp = bound_udp_socket() if quic else None
    fds = (sock.fileno(),) + ((udp.fileno(),) if udp is not None else ())
    try:
        argv = [
            sys.executable,
            "-m",
            "hypercorn",
            app,
            "--bind",
            f"fd://{sock.fileno()}",
            "-k",
            worker,
            "--graceful-timeout",
            "2",
            "--log-level",
            "warning",
        ]
        if certs is not None:
            argv += ["--certfile", str(certs.cert_file), "--keyfile", str(certs.key_file)]
        if udp is not None:
            argv += ["--quic-bind", f"fd://{udp.fileno()}"]
        proc = _spawn(name, argv, workdir, pass_fds=fds, env=env)
        endpoint = Endpoint(HOST, sock.getsockname()[1], certs.client_context if certs else None)
        if udp is not None and certs is not None:
            from .clients.h3 import QuicTLS

            endpoint.quic_port = udp.getsockname()[1]
            endpoint.quic_tls = QuicTLS(ca_file=certs.ca_file)
    finally:
        sock.close()
        if udp is not None:
            udp.close()
    return proc, endpoint


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # As people deploy it: buffering and compression on.
    gzip on;
    gzip_types text/event-stream application/x-ndjson text/plain;
    upstream app {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering on;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, upstream: Endpoint, *, name: str = "nginx") -> tuple[ServerProcess, Endpoint]:
    """nginx in the foreground as a reverse proxy to ``upstream`` (gzip and proxy
    buffering on, HTTP/1.1 upstream keep-alive)."""
    binary = find_nginx()
    if binary is None:
        raise TargetUnavailable("no nginx binary (apt-get install nginx-light)")
    ndir = workdir / "nginx"
    ndir.mkdir(exist_ok=True)
    last = ""
    for _ in range(3):  # nginx binds by port: retry if another process took it
        port = free_port()
        conf = NGINX_CONF.format(
            dir=ndir,
            user="user root;\n" if os.geteuid() == 0 else "",
            upstream=f"{upstream.host}:{upstream.port}",
            listen=f"{HOST}:{port}",
        )
        (ndir / "nginx.conf").write_text(conf)
        proc = _spawn(
            name, [binary, "-p", str(ndir), "-c", str(ndir / "nginx.conf"), "-e", str(ndir / "error.log")], workdir
        )
        proc.log_path = ndir / "error.log"
        endpoint = Endpoint(HOST, port)
        try:
            wait_ready(proc, endpoint, "/_hooks/streams?label=-", timeout=10)
            return proc, endpoint
        except TargetFailed as exc:
            last = str(exc)
            proc.stop()
    raise TargetFailed(f"nginx did not start: {last}")


# ---------------------------------------------------------------- targets
def _ready_or_stopped(proc: ServerProcess, endpoint: Endpoint) -> None:
    """Wait until the server answers; if it never does, stop it (a server still starting
    would otherwise run on, unowned, eating the CPU the next cases are timed on)."""
    try:
        wait_ready(proc, endpoint, "/_hooks/streams?label=-")
    except BaseException:
        proc.stop()
        raise


def _uvicorn_target(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    proc, ep = start_uvicorn(workdir, app, env=env)
    t = Target("h1-uvicorn", "h1", ep, "uvicorn (h11, asyncio)", hooks=ep, processes=[proc], workdir=workdir)
    _ready_or_stopped(proc, ep)
    return t


def _hypercorn_h1(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    proc, ep = start_hypercorn(workdir, app, env=env)
    t = Target("h1-hypercorn", "h1", ep, "hypercorn (asyncio)", hooks=ep, processes=[proc], workdir=workdir)
    _ready_or_stopped(proc, ep)
    return t


def _hypercorn_h2c(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    proc, ep = start_hypercorn(workdir, app, env=env)
    t = Target(
        "h2-hypercorn",
        "h2",
        ep,
        "hypercorn (asyncio), h2c prior knowledge",
        hooks=ep,
        processes=[proc],
        workdir=workdir,
    )
    _ready_or_stopped(proc, ep)
    return t


def _hypercorn_tls(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    certs = make_certs(workdir)
    proc, ep = start_hypercorn(workdir, app, certs=certs, name="hypercorn-tls", env=env)
    t = Target("h2-tls", "h2", ep, "hypercorn (asyncio), TLS + ALPN h2", hooks=ep, processes=[proc], workdir=workdir)
    _ready_or_stopped(proc, ep)
    return t


def _hypercorn_h3(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    if importlib.util.find_spec("aioquic") is None:
        raise TargetUnavailable("the h3-hypercorn target needs aioquic (pip install 'hypercorn[h3]')")
    certs = make_certs(workdir)
    proc, ep = start_hypercorn(workdir, app, certs=certs, name="hypercorn-h3", env=env, quic=True)
    t = Target(
        "h3-hypercorn",
        "h3",
        ep,
        "hypercorn (asyncio), HTTP/3 over QUIC (aioquic), TLS",
        hooks=ep,
        processes=[proc],
        workdir=workdir,
    )
    _ready_or_stopped(proc, ep)
    return t


def _hypercorn_trio(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    proc, ep = start_hypercorn(workdir, app, worker="trio", name="hypercorn-trio", env=env)
    t = Target("h1-hypercorn-trio", "h1", ep, "hypercorn (trio worker)", hooks=ep, processes=[proc], workdir=workdir)
    _ready_or_stopped(proc, ep)
    return t


def _nginx(workdir: Path, app: str, env: dict[str, str] | None) -> Target:
    if find_nginx() is None:
        raise TargetUnavailable("no nginx binary (apt-get install nginx-light)")
    up_proc, up = start_uvicorn(workdir, app, name="uvicorn-upstream", env=env)
    try:
        wait_ready(up_proc, up, "/_hooks/streams?label=-")
        proc, ep = start_nginx(workdir, up)
    except BaseException:
        up_proc.stop()
        raise
    return Target(
        "nginx",
        "h1",
        ep,
        "nginx (gzip, proxy_buffering on) → uvicorn",
        hooks=up,
        proxy="nginx",
        processes=[up_proc, proc],
        workdir=workdir,
    )


Launcher = Callable[[Path, str, "dict[str, str] | None"], Target]

#: Target name → launcher, in report order.
TARGETS: dict[str, Launcher] = {
    "h1-uvicorn": _uvicorn_target,
    "h1-hypercorn": _hypercorn_h1,
    "h2-hypercorn": _hypercorn_h2c,
    "h2-tls": _hypercorn_tls,
    "h1-hypercorn-trio": _hypercorn_trio,
    "nginx": _nginx,
    "h3-hypercorn": _hypercorn_h3,
}


def start_target(
    name: str, app: str = DEFAULT_APP, *, env: dict[str, str] | None = None, rename: str | None = None
) -> Target:
    """Start a target by name (see :data:`TARGETS`); the caller must ``stop()`` it."""
    try:
        launcher = TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None
    workdir = Path(tempfile.mkdtemp(prefix=f"conformance-{name}-"))
    try:
        target = launcher(workdir, app, env)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if rename:
        target.name = rename
    if app == DEFAULT_APP:
        target.demo = _demo_mounted(target)
    return target


def _demo_mounted(target: Target) -> bool:
    try:
        with target.h1(timeout=5) as c:
            c.request("GET", "/demo/")
            resp = c.read_response(deadline=time.monotonic() + 5)
        return resp.status is not None and resp.status != 404
    except Exception:
        return False


@contextlib.contextmanager
def running(name: str, app: str = DEFAULT_APP, **kw: Any) -> Iterator[Target]:
    """Start a target for the ``with`` block and always stop it."""
    target = start_target(name, app, **kw)
    try:
        yield target
    finally:
        target.stop()


def external_target(
    url: str,
    *,
    h2: bool = False,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    insecure: bool = False,
    h3: bool = False,
    h3_port: int | None = None,
    cafile: str | None = None,
    read_timeout: float = 300.0,
    active_metric: ActiveMetric | None = None,
    behind_proxy: bool = False,
    name: str | None = None,
    concurrency: int | None = None,
) -> Target:
    """A target for an external SSE/NDJSON endpoint (no app endpoints, no hooks).

    ``read_timeout`` bounds one socket read (a stream may pause that long);
    ``active_metric`` is the gauge of running generations; ``behind_proxy`` says a
    reverse proxy is in front even if its headers do not show it. With ``h3`` the
    cases speak HTTP/3 (https:// only) to UDP ``h3_port``; without one, the port the
    endpoint advertises in ``Alt-Svc`` (``h3=":PORT"``, asked with one HEAD over TLS),
    else the URL's port. ``cafile`` verifies the server with that CA (every protocol);
    ``insecure`` does not verify it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be an http:// or https:// URL, got {url!r}")
    if h3 and parts.scheme != "https":
        raise ValueError(f"HTTP/3 runs over QUIC, which needs TLS: --h3 takes an https:// URL, got {url!r}")
    if h3 and h2:
        raise ValueError("--h2 and --h3 exclude each other")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    tls: Callable[[], ssl.SSLContext] | None = None
    if parts.scheme == "https":

        def tls() -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=cafile)
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return ctx

    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    protocol = "h3" if h3 else "h2" if h2 else "h1"
    endpoint = Endpoint(parts.hostname, port, tls)
    notes: list[str] = []
    if h3:
        from .clients.h3 import QuicTLS

        endpoint.quic_tls = QuicTLS(ca_file=Path(cafile) if cafile else None, insecure=insecure)
        if h3_port is None:
            h3_port = advertised_h3_port(endpoint, path)
            notes.append(f"QUIC port {h3_port} from Alt-Svc" if h3_port else f"QUIC port {port} (the URL's)")
        endpoint.quic_port = h3_port or port
    name = name or f"{protocol}-url"
    return Target(
        name,
        protocol,
        endpoint,
        f"external {url}",
        app_endpoints=False,
        path=path,
        method=method,
        body=body,
        extra_headers=list(headers or []),
        notes=notes,
        read_timeout=read_timeout,
        active_metric=active_metric,
        behind_proxy=behind_proxy,
        concurrency=concurrency,
    )


def advertised_h3_port(endpoint: Endpoint, path: str, timeout: float = 5.0) -> int | None:
    """The UDP port an HTTPS endpoint advertises for HTTP/3 on the same host
    (``Alt-Svc: h3=":PORT"``), from one HEAD request; None if it advertises none or
    cannot be asked."""
    import re

    try:
        with endpoint.h1(timeout=timeout) as c:
            c.request("HEAD", path)
            resp = c.read_response(deadline=time.monotonic() + timeout)
    except Exception:
        return None
    for value in resp.header_all(b"alt-svc"):
        match = re.search(rb'(?:^|[\s,])h3=":(\d+)"', value)
        if match:
            return int(match.group(1))
    return None
