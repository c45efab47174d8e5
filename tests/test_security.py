"""TLS, client certificates, basic auth and headers on /metrics; secrets that never leak."""

from __future__ import annotations

import base64
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme
import yaml
from conftest import SCRIPT, FakeClock, Running, account, build_stack, connection_for, rested_storage
from entries import connection_entry

from exporter.api.client import IbaneraClient
from exporter.api.errors import TransientError
from exporter.api.memory import LoginMemory
from exporter.config import CaBundle, Config, ConnectionConfig, RetryPolicy, Secret
from exporter.metrics import Exposition
from exporter.simulator import Fault, Simulator
from exporter.web import WebContext, WebServer
from exporter.webconfig import BasicAuth, WebConfigError, WebConfigWatcher, load_web_config

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path, ca):
    """Server certificate and key, the CA, and a client certificate from the same CA."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.crt")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.crt")
    client = ca.issue_cert("scraper.example", "prometheus@example.com")
    client.private_key_and_cert_chain_pem.write_to_path(tmp_path / "client.pem")
    return tmp_path


def serve(tmp_path: Path, web_config: dict | None):
    """The exporter's web server over a stack with one good poll, with this web config."""
    watcher = None
    if web_config is not None:
        (tmp_path / "web.yml").write_text(yaml.safe_dump(web_config))
        watcher = WebConfigWatcher(tmp_path / "web.yml")
    stack = build_stack(FakeClock(), [account(1)])
    stack.poll()

    def statuses():
        return [p.status() for p in stack.pollers]

    exposition = Exposition(statuses, stack.config, "test")
    server = WebServer(("127.0.0.1", 0), WebContext(exposition, statuses, "/metrics", "test"), watcher)
    server.start()
    return stack, server


@pytest.fixture
def web(tmp_path):
    started = []

    def make(web_config):
        stack, server = serve(tmp_path, web_config)
        started.append((stack, server))
        return server

    yield make
    for stack, server in started:
        server.stop()
        stack.close()


def tls_client(certs: Path, client_cert: bool = False, ca_file: str = "ca.crt") -> httpx.Client:
    context = ssl.create_default_context(cafile=str(certs / ca_file))
    if client_cert:
        context.load_cert_chain(str(certs / "client.pem"))
    return httpx.Client(verify=context, timeout=5)


def test_plain_http_without_a_web_config(web):
    server = web(None)
    assert httpx.get(f"http://127.0.0.1:{server.port}/metrics").status_code == 200


def test_tls(web, certs):
    server = web({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    with tls_client(certs) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200 and "ibanera_total_balance" in response.text
    with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port gets nothing useful
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


# Client certificates required, and verified against the test CA.
MTLS = {
    "tls_server_config": {
        "cert_file": "server.crt",
        "key_file": "server.key",
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "ca.crt",
    }
}


def test_mtls_accepts_a_client_certificate_from_the_ca_and_refuses_none(web, certs):
    server = web(MTLS)
    with tls_client(certs, client_cert=True) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/metrics").status_code == 200
    with tls_client(certs) as client, pytest.raises(httpx.HTTPError):
        client.get(f"https://127.0.0.1:{server.port}/metrics")


def test_mtls_refuses_a_certificate_from_another_ca(web, certs, tmp_path):
    other = trustme.CA().issue_cert("intruder.example")
    other.private_key_and_cert_chain_pem.write_to_path(tmp_path / "other.pem")
    server = web(MTLS)
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(tmp_path / "other.pem"))
    with httpx.Client(verify=context, timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.get(f"https://127.0.0.1:{server.port}/metrics")


@pytest.mark.parametrize("sans, allowed", [(["scraper.example"], True), (["someone.else"], False)])
def test_client_allowed_sans(web, certs, sans, allowed):
    server = web({"tls_server_config": {**MTLS["tls_server_config"], "client_allowed_sans": sans}})
    with tls_client(certs, client_cert=True) as client:
        if allowed:
            assert client.get(f"https://127.0.0.1:{server.port}/metrics").status_code == 200
        else:
            with pytest.raises(httpx.HTTPError):
                client.get(f"https://127.0.0.1:{server.port}/metrics")


@pytest.mark.parametrize(
    "auth, code",
    [
        (("prometheus", PASSWORD), 200),
        (("prometheus", "wrong"), 401),
        (("nobody", PASSWORD), 401),
        (None, 401),
    ],
)
def test_basic_auth(web, auth, code):
    server = web({"basic_auth_users": {"prometheus": HASH}})
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", auth=auth)
    assert response.status_code == code
    if code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert "ibanera" not in response.text
    for path in ("/", "/-/ready"):
        assert httpx.get(f"http://127.0.0.1:{server.port}{path}", auth=auth).status_code == (
            200 if code == 200 else 401
        )
    assert httpx.get(f"http://127.0.0.1:{server.port}/-/healthy").status_code == 200  # probes carry no credentials


def test_basic_auth_checks_are_cached_and_unknown_users_cost_a_bcrypt_check(monkeypatch):
    """Counted, not timed: a known user's bcrypt check runs once and then hits the cache; an
    unknown user costs a check every time (no shortcut that tells names apart by speed)."""
    checks: list[bytes] = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(
        bcrypt, "checkpw", lambda password, hashed: checks.append(hashed) or real_checkpw(password, hashed)
    )
    users = {"alice": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))}
    auth = BasicAuth()
    header = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert auth.check(users, header) and len(checks) == 1
    for _ in range(100):
        assert auth.check(users, header)
    assert len(checks) == 1
    assert auth.check(users, "basic " + header[6:]) and len(checks) == 1  # the scheme in any case (RFC 9110)
    unknown = "Basic " + base64.b64encode(b"mallory:pw").decode()
    for _ in range(3):
        assert not auth.check(users, unknown)
    assert len(checks) == 4
    wrong = "Basic " + base64.b64encode(b"alice:nope").decode()
    assert not auth.check(users, wrong) and not auth.check(users, wrong)
    assert len(checks) == 6  # a wrong password is never cached as good, nor as bad
    too_long = "Basic " + base64.b64encode(b"alice:" + b"x" * 100).decode()
    assert not auth.check(users, too_long)  # bcrypt's 72-byte limit is a no, not a crash


def test_security_headers(web):
    headers = {
        "X-Frame-Options": "deny",
        "X-Content-Type-Options": "nosniff",
        "Strict-Transport-Security": "max-age=31536000",
        "Content-Security-Policy": "default-src 'none'",
    }
    server = web({"http_server_config": {"headers": headers}})
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    for name, value in headers.items():
        assert response.headers[name] == value


@pytest.mark.parametrize(
    "config, says",
    [
        ({"tls_server_config": {"cert_file": "server.crt"}}, "cert_file and key_file are both required"),
        (
            {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "colour": "red"}},
            "tls_server_config.colour: unknown key",
        ),
        ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "server.key"}}, "cannot load"),
        (
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                }
            },
            "client_ca_file: required",
        ),
        (
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "client_auth_type": "RequireAnyClientCert",
                    "client_ca_file": "ca.crt",
                }
            },
            "use RequireAndVerifyClientCert",
        ),
        (
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "min_version": "TLS13",
                    "max_version": "TLS12",
                }
            },
            "below min_version",
        ),
        (
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "cipher_suites": ["TLS_AES_128_GCM_SHA256"],
                }
            },
            "cipher_suites: not supported",
        ),
        ({"http_server_config": {"headers": {"X-Frame-Options": "allow-from x"}}}, "deny, sameorigin"),
        ({"http_server_config": {"headers": {"X-Powered-By": "me"}}}, "not an allowed header"),
        ({"basic_auth_users": {"alice": "plaintext-password"}}, "expected a whole bcrypt hash"),
        ({"rate_limit": {"interval": "1s", "burst": 2}}, "rate_limit: not supported"),
        ({"basic_auth": {}}, "basic_auth: unknown key"),
    ],
)
def test_bad_web_config_files_are_refused_with_the_key(certs, config, says):
    (certs / "web.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(WebConfigError) as info:
        load_web_config(certs / "web.yml")
    assert says in str(info.value) and str(certs / "web.yml") in str(info.value)
    assert "plaintext-password" not in str(info.value)


def test_a_bad_web_config_stops_the_exporter_at_start_up(tmp_path):
    (tmp_path / "web.yml").write_text("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n")
    result = subprocess.run(
        [SCRIPT, "--demo", "--web.config.file", str(tmp_path / "web.yml")], capture_output=True, text=True, timeout=30
    )
    assert (
        result.returncode == 2
        and "tls_server_config: cannot load" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_certificates_rotate_without_a_restart(web, certs, tmp_path):
    server = web({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    url = f"https://127.0.0.1:{server.port}/metrics"
    with tls_client(certs) as client:
        assert client.get(url).status_code == 200
    new_ca = trustme.CA()
    new_ca.cert_pem.write_to_path(tmp_path / "new-ca.crt")
    new_cert = new_ca.issue_cert("127.0.0.1")
    new_cert.private_key_pem.write_to_path(tmp_path / "server.key.new")
    new_cert.cert_chain_pems[0].write_to_path(tmp_path / "server.crt.new")
    os.replace(tmp_path / "server.key.new", tmp_path / "server.key")
    os.replace(tmp_path / "server.crt.new", tmp_path / "server.crt")
    with tls_client(certs, ca_file="new-ca.crt") as client:
        assert client.get(url).status_code == 200
    with tls_client(certs) as client, pytest.raises(httpx.HTTPError):
        client.get(url)


def test_a_broken_reload_keeps_the_last_good_config(web, certs):
    server = web({"basic_auth_users": {"prometheus": HASH}})
    (certs / "web.yml").write_text("basic_auth_users: [not, a, mapping]\n")
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert httpx.get(url, auth=("prometheus", PASSWORD)).status_code == 200
    assert httpx.get(url).status_code == 401


# -- the upstream connection ----------------------------------------------------------


@pytest.fixture
def https_simulator(ca, tmp_path):
    server_cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca.cert_pem.write_to_path(tmp_path / "upstream-ca.crt")
    with Simulator([account(1)], ssl_context=context) as simulator:
        yield simulator, tmp_path / "upstream-ca.crt"


def _client(simulator, **overrides) -> IbaneraClient:
    connection = connection_for(simulator, **overrides)
    config = Config((connection,), request_timeout=5, retry=RetryPolicy(1, 0.01, 0.01))
    return IbaneraClient(connection, config, memory=LoginMemory.first_contact())


def test_upstream_tls_is_verified_by_default(https_simulator):
    simulator, _ = https_simulator
    with pytest.raises(TransientError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _client(simulator).fetch_balances()
    assert simulator.logins_succeeded == 0


def test_upstream_ca_file(https_simulator):
    simulator, ca_file = https_simulator
    assert len(_client(simulator, ca_file=CaBundle(ca_file, ca_file.read_text())).fetch_balances().rows) == 1


def test_turning_verification_off_needs_its_own_key_and_warns_at_start(https_simulator, tmp_path):
    simulator, _ = https_simulator
    assert len(_client(simulator, tls_insecure_skip_verify=True).fetch_balances().rows) == 1
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"connections": [connection_entry(simulator, "insecure", tls_insecure_skip_verify=True)]})
    )
    exporter = Running("--config.file", str(config))
    _, _, log = exporter.stop()
    assert re.search(r"level=warn .*TLS verification is off.*connection=insecure", log)


# -- secrets never leak ---------------------------------------------------------------

LEAK_USER = "leak-test-user-Q7"
LEAK_PASSWORD = "Leak-Test-Password-9zX!"
LEAK_TOTP_KEY = b"leak-test-totp-secret-XYZ"


def _contains(text: str, secret: str) -> bool:
    if secret.isdigit():  # a 6-digit code: only as a number of its own, not inside a timestamp
        return re.search(rf"(?<![0-9]){secret}(?![0-9])", text) is not None
    return secret in text


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_secret_ever_appears_in_output_metrics_or_pages(tmp_path, log_format):

    totp_base32 = base64.b32encode(LEAK_TOTP_KEY).decode()
    outputs: list[str] = []
    # The server's clock runs ahead of ours by `skew`, set below so that the exporter's first
    # login falls late in a 30 s code step: the second login, which must wait for a step no
    # code has used, then waits about a second instead of up to 30 (the exporter follows the
    # server's clock from its Date headers).
    skew = [0.0]
    with Simulator(
        [account(1)],
        username=LEAK_USER,
        password=LEAK_PASSWORD,
        totp_secret=LEAK_TOTP_KEY,
        token_lifetime=2,
        clock=lambda: time.time() + skew[0],
    ) as simulator:
        good = {
            "name": "good",
            "base_url": simulator.url,
            "username": LEAK_USER,
            "password": LEAK_PASSWORD,
            "totp_secret": totp_base32,
        }
        refused = {**good, "name": "refused", "password": LEAK_PASSWORD + "-wrong"}
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "poll_interval": "300ms",
                    "retry": {"max_attempts": 2, "initial_backoff": "10ms", "max_backoff": "20ms"},
                    "connections": [good, refused],
                }
            )
        )
        for args in (["--config.check"], ["--config.check", "--log.level", "debug"]):
            result = subprocess.run(
                [SCRIPT, "--config.file", str(config), "--log.format", log_format, *args],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0
            outputs += [result.stdout, result.stderr]
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"connections": [{**good, "colour": "red"}]}))
        bad_secret = tmp_path / "bad-secret.yaml"
        bad_secret.write_text(yaml.safe_dump({"connections": [{**good, "password": {LEAK_PASSWORD: 1}}]}))
        for path in (bad, bad_secret):
            result = subprocess.run([SCRIPT, "--config.file", str(path)], capture_output=True, text=True, timeout=30)
            assert result.returncode == 2
            outputs += [result.stdout, result.stderr]

        for fault in (
            Fault("status0", "balances", message_code="Leak_Check"),
            Fault("http", "balances", status=503),
            Fault("html", "balances"),
            Fault("http", "balances", status=401),
        ):
            simulator.inject(fault, times=2)
        skew[0] = (26 - time.time()) % 30
        skew[0] += 30 if skew[0] < 3 else 0  # beyond the 2 s the exporter puts down to noise
        exporter = Running(
            "--config.file",
            str(config),
            "--log.level",
            "debug",
            "--log.format",
            log_format,
            "--storage.path",
            rested_storage(tmp_path / "state", "good", "refused"),
        )
        try:
            deadline = time.monotonic() + 40
            # Tokens expire every 2 s; a new login waits for a fresh 30 s code step: two logins.
            while simulator.logins_succeeded < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            for path in ("/metrics", "/", "/-/ready"):
                outputs.append(httpx.get(exporter.url + path).text)
        finally:
            _, _, log = exporter.stop()
        outputs.append(log)
        secrets = [
            LEAK_USER,
            LEAK_PASSWORD,
            totp_base32,
            LEAK_TOTP_KEY.decode(),
            *simulator.issued_tokens,
            *set(simulator.otp_codes_seen),
        ]
    assert (
        simulator.logins_failed >= 1 and len(simulator.issued_tokens) >= 2 and len(set(simulator.otp_codes_seen)) >= 2
    )
    assert "login refused" in log and "Leak_Check" in log  # the paths under test really ran
    everything = "\n".join(outputs)
    leaked = [s for s in secrets if _contains(everything, s)]
    assert leaked == []


def test_config_objects_redact_secrets_in_repr():
    connection = ConnectionConfig(
        name="c", username=Secret(LEAK_USER), password=Secret(LEAK_PASSWORD), totp_secret=Secret("JBSWY3DPEHPK3PXP")
    )
    text = repr(Config(connections=(connection,))) + str(connection)
    assert LEAK_PASSWORD not in text and LEAK_USER not in text and "JBSWY3DP" not in text
    assert "Secret('********')" in text
