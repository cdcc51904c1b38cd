"""A client that vanishes (no FIN, no RST) while tokens flow: with ``asgi_stream.net``'s
listening socket the kernel drops the connection after ``user_timeout`` and the
generator is cancelled within seconds; on a plain socket it is not (the kernel
retransmits for about 15 minutes). Measured in a network namespace of its own
(``unshare -n``, loopback only) where the client's packets are dropped with nftables
(or iptables); skipped where namespaces or packet filtering are not permitted."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_stream.net import PeerTimeouts, apply_peer_timeouts, listen_socket

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 12.0  # seconds the probe waits for each detection
#: The probe's PeerTimeouts: keepalive 1 s + 2 probes 1 s apart, user timeout 2 s.
BOUND = 1.0 + 2 * 1.0 + 2.0


def accepted(sock: socket.socket) -> socket.socket:
    client = socket.create_connection(sock.getsockname()[:2])
    conn, _ = sock.accept()
    client.close()
    return conn


def tcp_options(s: socket.socket) -> dict[str, int]:
    tcp = socket.IPPROTO_TCP
    return {
        "SO_KEEPALIVE": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": s.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": s.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": s.getsockopt(tcp, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": s.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux's")
def test_the_listening_socket_carries_the_options_and_accepted_connections_inherit_them() -> None:
    timeouts = PeerTimeouts(user_timeout=7.5, keepalive_idle=11, keepalive_interval=3, keepalive_count=4)
    sock = listen_socket("127.0.0.1", 0, timeouts, backlog=16)
    try:
        expected = {
            "SO_KEEPALIVE": 1,
            "TCP_KEEPIDLE": 11,
            "TCP_KEEPINTVL": 3,
            "TCP_KEEPCNT": 4,
            "TCP_USER_TIMEOUT": 7500,
        }
        assert tcp_options(sock) == expected
        conn = accepted(sock)
        try:
            assert tcp_options(conn) == expected
        finally:
            conn.close()
        assert sock.get_inheritable() and sock.getsockname()[1] > 0
    finally:
        sock.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux's")
def test_defaults_and_partial_settings() -> None:
    with socket.socket() as s:
        assert apply_peer_timeouts(s) == {
            "SO_KEEPALIVE",
            "TCP_KEEPIDLE",
            "TCP_KEEPINTVL",
            "TCP_KEEPCNT",
            "TCP_USER_TIMEOUT",
        }
        assert tcp_options(s)["TCP_USER_TIMEOUT"] == 30_000 and tcp_options(s)["TCP_KEEPIDLE"] == 15
    with socket.socket() as s:  # user timeout only: keepalive left as the system has it
        assert apply_peer_timeouts(s, PeerTimeouts(keepalive_idle=None, user_timeout=5)) == {"TCP_USER_TIMEOUT"}
        assert tcp_options(s)["SO_KEEPALIVE"] == 0


def test_ipv6_hosts_bind_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = listen_socket("::1", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with sock:
        assert sock.family == socket.AF_INET6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_timeout": 0},
        {"user_timeout": -1.0},
        {"keepalive_idle": "15"},
        {"keepalive_interval": None},
        {"keepalive_count": 0},
        {"keepalive_count": 2.5},
        {"user_timeout": True},
    ],
)
def test_bad_timeouts_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="PeerTimeouts"):
        PeerTimeouts(**kwargs)


def test_a_port_in_use_raises_and_leaks_no_socket() -> None:
    with listen_socket("127.0.0.1", 0) as first:
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", first.getsockname()[1])


# ------------------------------------------------------------ in a network namespace
def run_probe() -> dict:
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux network namespaces (util-linux unshare)")
    if shutil.which("nft") is None and shutil.which("iptables") is None:
        pytest.skip("needs nftables or iptables to drop packets (apt-get install nftables)")
    check = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {check.stderr.strip()}")
    proc = subprocess.run(
        [unshare, "-n", sys.executable, "-m", "tests.net.probe", "--budget", str(BUDGET)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUDGET + 60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode == 3 and "skip" in result:
        pytest.skip(f"cannot drop packets in the namespace: {result['skip']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result


def test_a_vanished_peer_is_detected_in_seconds_with_the_helper_and_not_without() -> None:
    result = run_probe()
    for case in ("uvicorn-helper", "hypercorn-helper"):
        after = result[case]["detected_after_s"]
        assert result[case]["events_before_drop"] >= 3
        assert after is not None and after <= BOUND + 5.0, (case, result)
        assert after >= 2.0 - 0.5, (case, result)  # the user timeout, not something earlier
    idle = result["uvicorn-helper-idle"]["detected_after_s"]
    assert idle is not None and idle <= BOUND + 5.0, result  # keepalive probes: nothing was being sent
    assert result["uvicorn-default"]["detected_after_s"] is None, result  # still retransmitting


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux's")
def test_the_demo_listens_with_the_peer_timeouts() -> None:
    from asgi_stream.demo.cli import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert tcp_options(sock) == {
            "SO_KEEPALIVE": 1,
            "TCP_KEEPIDLE": 15,
            "TCP_KEEPINTVL": 5,
            "TCP_KEEPCNT": 3,
            "TCP_USER_TIMEOUT": 30_000,
        }
    finally:
        sock.close()
