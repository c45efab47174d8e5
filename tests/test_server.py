"""The exporter's HTTP server under misbehaving clients, over real loopback sockets.

Clients that must misbehave (say nothing, trickle bytes, send bodies, speak HTTP/0.9)
are raw sockets. The limits are made short here so that the tests stay fast; the README
gives the defaults.
"""

from __future__ import annotations

import gzip
import os
import resource
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import Running, account, connection_for, rested_storage

from exporter import http11, httpserver
from exporter.config import Config
from exporter.http11 import Request, Response, ServerLimits
from exporter.httpserver import HTTPServer
from exporter.metrics import Exposition
from exporter.simulator import Simulator
from exporter.web import WebContext, WebServer, gzip_accepted

SHORT = ServerLimits(max_connections=16, read_header_timeout=1.0, idle_timeout=1.0, write_timeout=5.0)
# How long a test waits for something the server must do within one of the SHORT limits:
# generous, so that a loaded machine never fails a test; not a performance figure.
PATIENCE = 8.0


def start_server(limits: ServerLimits = SHORT) -> WebServer:
    exposition = Exposition(list, Config(connections=()), "test")
    server = WebServer(("127.0.0.1", 0), WebContext(exposition, list, "/metrics", "test"), limits=limits)
    server.start()
    return server


@pytest.fixture
def server() -> Iterator[WebServer]:
    started = start_server()
    yield started
    started.stop()


def connect(server: WebServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    assert len(body) == length, f"more bytes than Content-Length: {body[length:]!r}"
    return int(status_line.split(" ")[1]), headers, body


def closed_by_server(sock: socket.socket, within: float = PATIENCE) -> bool:
    """Whether the server closes the connection within `within` seconds (anything it sends first is read)."""
    deadline = time.monotonic() + within
    while True:  # at least one look, also with within=0
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionError:
                return True
        elif time.monotonic() >= deadline:
            return False


def healthy(server: WebServer) -> bool:
    return httpx.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=PATIENCE).status_code == 200


# -- bounded work per client ----------------------------------------------------------


def test_connections_and_threads_are_capped_and_new_clients_still_get_in(caplog):
    server = start_server(ServerLimits(max_connections=8, read_header_timeout=30, idle_timeout=30))
    threads_before = threading.active_count()
    silent = [connect(server) for _ in range(60)]  # connect and say nothing
    try:
        # 52 of the 60 are closed to make room; 8 stay open, each with its thread.
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline and sum(closed_by_server(s, 0) for s in silent) < 52:
            time.sleep(0.05)
        while time.monotonic() < deadline and threading.active_count() - threads_before > 8:
            time.sleep(0.05)  # the threads of the closed ones finishing
        assert sum(closed_by_server(s, 0) for s in silent) == 52
        assert threading.active_count() - threads_before <= 8
        # Said once, not once per connection closed: a flood must not become a flood of log lines.
        assert caplog.text.count("connection limit reached") == 1
        # The oldest idle connections were closed to make room: a scraper still gets its answer.
        assert healthy(server)
    finally:
        for sock in silent:
            sock.close()
        server.stop()


def test_slowloris_connections_are_closed_at_the_header_deadline_while_scrapes_go_on(server):
    trickling = [connect(server) for _ in range(12)]
    for sock in trickling:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    closed: set[int] = set()
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and len(closed) < len(trickling):
        for i, sock in enumerate(trickling):  # a header line every 0.1 s: never idle, never done
            if i not in closed:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed.add(i)
                    continue
                if closed_by_server(sock, 0.01):
                    closed.add(i)
        assert healthy(server)  # meanwhile, a normal scrape answers
        time.sleep(0.1)
    for sock in trickling:
        sock.close()
    assert len(closed) == len(trickling)


def test_idle_keep_alive_connections_are_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "keep-alive"
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive between scrapes works
        assert read_response(sock)[0] == 200
        assert closed_by_server(sock)  # then, idle for longer than idle_timeout, it is closed


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the listen backlog")
def test_listen_backlog_is_at_least_128(server):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True, check=True).stdout
    backlog = int(out.split()[2])  # for a listening socket, Send-Q is the backlog
    assert backlog >= 128


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_out_of_descriptors_accept_backs_off_and_recovers(tmp_path):
    with Simulator([account(1)]) as simulator:
        conn = connection_for(simulator)
        (tmp_path / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    "poll_interval": "1h",
                    "connections": [
                        {
                            "name": "c",
                            "base_url": conn.base_url,
                            "username": conn.username.reveal(),
                            "password": conn.password.reveal(),
                            "totp_secret": conn.totp_secret.reveal(),
                        }
                    ],
                }
            )
        )
        daemon = Running(
            "--config.file", str(tmp_path / "config.yaml"), "--storage.path", rested_storage(tmp_path / "state", "c")
        )
        try:
            daemon.wait_ready()
            pid = daemon.proc.pid
            in_use = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 4, in_use + 4))
            port = int(daemon.url.rsplit(":", 1)[1])
            clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
            time.sleep(0.5)  # the first few are accepted; accept() now fails with EMFILE
            before = _cpu_seconds(pid)
            time.sleep(2.0)
            # A spinning accept loop burns most of a core (1.5 s of these 2); backing off, almost nothing.
            assert _cpu_seconds(pid) - before < 0.75
            for sock in clients:
                sock.close()
            deadline = time.monotonic() + PATIENCE + 10  # the accepted ones end at the header deadline (10 s)
            while time.monotonic() < deadline:
                try:
                    if httpx.get(daemon.url + "/-/healthy", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise AssertionError("the server did not recover when descriptors were free again")
        finally:
            code, _, log = daemon.stop()
    assert code == 0
    assert 1 <= log.count("out of file descriptors") <= 2  # said once when it starts, not at every retry


# -- HTTP details ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, gzipped",
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("gzip;q=1.0, identity;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("GZIP;Q=0", False),
        ("deflate, *;q=0", False),
        ("gzip;q=0, *", False),
        ("gzip;q=nonsense", False),
        ("", False),
    ],
)
def test_accept_encoding_q_values(server, header, gzipped):
    assert gzip_accepted(header) is gzipped
    with connect(server) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {header}\r\n\r\n".encode())
        status, headers, body = read_response(sock)
    assert status == 200
    assert (headers.get("content-encoding") == "gzip") is gzipped
    text = gzip.decompress(body) if gzipped else body
    assert b"ibanera_exporter_build_info" in text


def test_a_body_on_get_is_discarded_not_parsed_as_the_next_request(server):
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /-/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
    assert (status, body) == (200, b"Ready.\n")  # the answer to /-/ready, not a 404 for the smuggled /nope


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\n\r\n1f\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
        b"Content-Length: 1000000\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        b"Content-Length: "
        + b"9" * 5000
        + b"\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",  # past int()'s 4300 digits
    ],
)
def test_a_body_that_is_not_read_closes_the_connection(server, framing):
    with connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + framing)
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_http_1_0_gets_a_close(server):
    with connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, body, headers["connection"]) == (200, b"Healthy.\n", "close")
        assert closed_by_server(sock)


@pytest.mark.parametrize(
    "host_lines",
    [b"Host: x\r\n", b"HOST: x\r\n", b"host:127.0.0.1:9100 \r\n", b"Host:\r\n", b"Host: \t\r\n"],
)
def test_one_host_header_however_spelled_is_enough_for_http_1_1(server, host_lines):
    # Names are case-insensitive, and an empty Host is valid (RFC 9110 7.2): one is one.
    with connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\n" + host_lines + b"\r\n")
        status, headers, _ = read_response(sock)
        assert (status, headers["connection"]) == (200, "keep-alive")


@pytest.mark.parametrize(
    "request_bytes, code",
    [
        (b"GET /\r\n", 400),  # HTTP/0.9
        (b"GET /metrics\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),  # a TLS hello on the plain port
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),  # space before the colon
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400),  # obsolete line folding
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
        # A bare CR ends the line for some proxies: the Content-Length behind it would frame a body they forward.
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: 1\rContent-Length: 5\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
        (b"GET /met\x00rics HTTP/1.1\r\n\r\n", 400),
        # '\xb9' is a digit to str.isdigit()
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \xb9\r\n\r\n", 400),
        # RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (a proxy in front would route by it).
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ],
)
def test_garbage_gets_an_error_and_a_close(server, request_bytes, code):
    with connect(server) as sock:
        sock.sendall(request_bytes)
        status, headers, _ = read_response(sock)
        assert (status, headers["connection"]) == (code, "close")
        assert closed_by_server(sock)


@pytest.mark.parametrize(
    "method, path, code",
    [
        ("PUT", "/metrics", 405),
        ("DELETE", "/", 405),
        ("POST", "/metrics", 405),
        ("BREW", "/metrics", 501),
    ],
)
def test_methods(server, method, path, code):
    with connect(server) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        status, headers, _ = read_response(sock)
    assert status == code
    if code == 405:
        assert headers["allow"] == "GET, HEAD"


def test_head_has_the_length_of_get_and_no_body(server):
    with connect(server) as sock:
        sock.sendall(b"HEAD /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response_head(sock)
        assert (status, headers["content-length"], body) == (200, str(len(b"Healthy.\n")), b"")
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing left over on the connection
        assert read_response(sock)[2] == b"Healthy.\n"


def read_response_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return (
        int(status_line.split(" ")[1]),
        {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)},
        rest,
    )


def test_at_the_cap_a_connection_being_answered_is_never_closed_to_make_room():
    entered, release = threading.Event(), threading.Event()

    def handler(request: Request) -> Response:
        if request.target == "/slow":
            entered.set()
            release.wait(PATIENCE)
        return Response(200, (b"done\n",))

    server = HTTPServer(("127.0.0.1", 0), handler, ServerLimits(max_connections=2, read_header_timeout=PATIENCE))
    server.start()
    try:
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(PATIENCE)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)  # newer, but idle
        newcomer = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
        assert closed_by_server(idle)  # the idle one made room, not the older busy one
        release.set()
        assert read_response(busy)[2] == b"done\n"
        newcomer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(newcomer)[2] == b"done\n"
        for sock in (busy, idle, newcomer):
            sock.close()
    finally:
        release.set()
        server.stop()


def test_a_client_that_never_reads_its_response_is_closed_at_the_write_deadline():
    # With one connection allowed, the next client is served only once the first one's thread
    # gave up writing: without a write deadline, never.
    body = b"x" * (32 * 1024 * 1024)  # more than the socket buffers of both ends hold
    server = HTTPServer(
        ("127.0.0.1", 0),
        lambda request: Response(200, (body,)),
        ServerLimits(max_connections=1, read_header_timeout=PATIENCE, write_timeout=1.0),
    )
    server.start()
    try:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as next_client:
            next_client.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response_head(next_client)[0] == 200
        stuck.close()
    finally:
        server.stop()


def test_a_bug_in_the_server_costs_one_connection_and_is_logged_in_the_log_format(server, monkeypatch, caplog):
    """An unexpected error while answering (here: writing the response head) closes that
    connection, says so through the logger (logfmt/json), and the server goes on."""
    original = httpserver.response_head
    calls: list[int] = []

    def response_head_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return original(*args, **kwargs)

    monkeypatch.setattr(httpserver, "response_head", response_head_failing_once)
    sock = connect(server)
    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed_by_server(sock)
    assert (
        "connection failed on an unexpected error" in caplog.text
        and "RuntimeError" in [getattr(r, "error", "") for r in caplog.records][-1]
    )
    assert healthy(server)


def test_over_tls_a_connection_still_in_its_handshake_is_closed_to_make_room(tmp_path):
    """ssl's wrap_socket detaches the plain socket before the handshake: shutting that one down
    did nothing, the victim stayed `closing` until its header deadline, and no other
    connection was accepted meanwhile. Three silent TCP peers at a cap of 2 over TLS: the
    oldest two must be closed for the later ones."""
    import ssl

    import trustme

    from exporter.httpserver import TLSSettings

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    settings = TLSSettings(context)
    server = HTTPServer(
        ("127.0.0.1", 0),
        lambda request: Response(200, (b"ok\n",)),
        ServerLimits(max_connections=2, read_header_timeout=60, idle_timeout=60),
        tls=lambda: settings,
    )
    server.start()
    silent = []
    try:
        for _ in range(4):  # each new one pushes out the oldest: none waits for a handshake deadline
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE))
        assert closed_by_server(silent[0]) and closed_by_server(silent[1])
        client = ssl.create_default_context()
        ca.configure_trust(client)
        with httpx.Client(verify=client, timeout=PATIENCE) as https:
            assert https.get(f"https://127.0.0.1:{server.port}/").status_code == 200
    finally:
        for sock in silent:
            sock.close()
        server.stop()


def test_at_the_cap_the_oldest_idle_connection_is_the_one_closed():
    # Mutation: max() for min() closed the newest idle one, the scraper's that just connected.
    server = start_server(ServerLimits(max_connections=2, read_header_timeout=60, idle_timeout=60))
    try:
        oldest, older = connect(server), connect(server)
        older.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(older)[0] == 200  # in its slot, idle again, and newer than `oldest`
        newcomer = connect(server)
        assert closed_by_server(oldest)
        newcomer.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(newcomer)[0] == 200
        older.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(older)[0] == 200
        for sock in (oldest, older, newcomer):
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize("extra, kept", [(0, True), (1, False)])
def test_a_body_of_exactly_the_discard_limit_is_read_and_one_byte_more_closes(extra, kept):
    # Mutation: `>=` for `>` closed the connection of a body of exactly max_discarded_body.
    limits = ServerLimits(
        max_connections=4, read_header_timeout=PATIENCE, idle_timeout=PATIENCE, max_discarded_body=100
    )
    server = start_server(limits)
    try:
        with connect(server) as sock:
            body = b"x" * (100 + extra)
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            status, headers, _ = read_response(sock)
            assert status == 200 and headers["connection"] == ("keep-alive" if kept else "close")
    finally:
        server.stop()


def test_an_error_answered_before_the_request_was_read_reaches_the_client(server):
    # Headers far over the limit, more than the socket buffers hold: the server answers 431
    # with most of them unread. Closing then would send a reset, and the client, still
    # sending, would never see the 431; the server half-closes and drains for a moment instead.
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000_000 + b"\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(request)
        status, headers, _ = read_response(sock)
        assert (status, headers["connection"]) == (431, "close")
        assert closed_by_server(sock)


def test_at_the_cap_a_connection_lingering_after_its_answer_makes_room(monkeypatch):
    # Clients that read their answer and never close held their slots, busy, for the whole
    # linger after a close: an attacker repeating HTTP/1.0 requests kept every slot out of
    # reach of eviction, and no scraper got in. The answer has gone out: the slot may go.
    monkeypatch.setattr(http11, "_LINGER_SECONDS", 3600.0)
    server = start_server(ServerLimits(max_connections=2, read_header_timeout=60, idle_timeout=60))
    try:
        holders = [connect(server), connect(server)]
        for sock in holders:
            sock.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert read_response(sock)[0] == 200  # and the socket stays open: the server lingers
        newcomer = connect(server)
        newcomer.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(newcomer)[0] == 200
        for sock in (*holders, newcomer):
            sock.close()
    finally:
        server.stop()


def test_a_client_that_never_closes_is_let_go_at_the_end_of_the_linger(monkeypatch):
    # The drain after a closing answer is bounded: a silent client that keeps its end open
    # does not hold the connection's thread beyond the linger.
    monkeypatch.setattr(http11, "_LINGER_SECONDS", 0.05)
    server = start_server()

    before = set(threading.enumerate())  # another test's lingering connections are not this one

    def connection_threads() -> int:
        return sum(t.name == "http-connection" and t not in before for t in threading.enumerate())

    try:
        with connect(server) as sock:
            sock.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert read_response(sock)[0] == 200
            deadline = time.monotonic() + PATIENCE
            while connection_threads() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert connection_threads() == 0  # and the client has not closed
    finally:
        server.stop()


def test_at_the_cap_a_lingering_connection_makes_room_before_an_older_idle_one(monkeypatch):
    # A connection whose last answer has gone out is the first to go: a keep-alive scraper
    # idle between two scrapes, older than it, keeps its connection.
    monkeypatch.setattr(http11, "_LINGER_SECONDS", 3600.0)
    server = start_server(ServerLimits(max_connections=2, read_header_timeout=60, idle_timeout=60))
    try:
        with connect(server) as scraper, connect(server) as done:
            scraper.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(scraper)[0] == 200
            done.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert read_response(done)[0] == 200
            assert done.recv(1) == b""  # the server's half-close: it lingers now
            with connect(server) as newcomer:
                newcomer.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(newcomer)[0] == 200
            scraper.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(scraper)[0] == 200
    finally:
        server.stop()
