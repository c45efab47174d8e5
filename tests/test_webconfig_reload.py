"""--web.config.file fails closed: no moment of an edit serves without TLS or basic auth."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time

import httpx
import pytest
import test_security
import trustme
import yaml
from test_security import HASH, PASSWORD, tls_client

from exporter.webconfig import WebConfigError, load_web_config

# The TLS and web-server fixtures of test_security, shared rather than copied.
ca, certs, web = test_security.ca, test_security.certs, test_security.web

AUTH = {"basic_auth_users": {"prometheus": HASH}}
TLS = {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}
MTLS = {
    "tls_server_config": {
        **TLS["tls_server_config"],
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "ca.crt",
    }
}


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Messages and their `error` fields, as the log line shows them."""
    return "\n".join(f"{r.getMessage()} {getattr(r, 'error', '')}" for r in caplog.records)


def replace_atomically(path, text: str) -> None:
    (path.parent / (path.name + ".tmp")).write_text(text)
    os.replace(path.parent / (path.name + ".tmp"), path)


def test_an_in_place_rewrite_never_turns_basic_auth_off(web, certs, caplog):
    server = web(AUTH)
    url = f"http://127.0.0.1:{server.port}/metrics"
    path = certs / "web.yml"
    with open(path, "w") as file:  # an editor truncates, then writes
        file.flush()
        assert path.stat().st_size == 0
        assert httpx.get(url).status_code == 401
        file.write("basic_auth_users:\n")  # half written: no users yet
        file.flush()
        assert httpx.get(url).status_code == 401
        file.write(f"  prometheus: '{HASH}'\n")
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("prometheus", PASSWORD)).status_code == 200
    assert "the web config file is empty" in logged(caplog) and "turn basic auth off" in logged(caplog)


@pytest.mark.parametrize(
    "replacement, reason",
    [
        ("", "the web config file is empty"),
        ("{}\n", "turn basic auth off"),
        (yaml.safe_dump({"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}), "turn basic auth off"),
        ("basic_auth_users: {prometheus: [\n", "not valid YAML"),
    ],
)
def test_an_atomic_replacement_that_would_turn_basic_auth_off_is_refused(web, certs, caplog, replacement, reason):
    server = web(AUTH)
    url = f"http://127.0.0.1:{server.port}/metrics"
    replace_atomically(certs / "web.yml", replacement)
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        response = httpx.get(url)
    assert response.status_code == 401 and "X-Frame-Options" not in response.headers
    assert httpx.get(url, auth=("prometheus", PASSWORD)).status_code == 200
    assert reason in logged(caplog) and "last good one stays in use" in logged(caplog)


@pytest.mark.parametrize(
    "start, replacement",
    [
        (TLS, {}),
        (TLS, AUTH),
        (MTLS, TLS),  # client certificates no longer asked for
        ({"tls_server_config": {**MTLS["tls_server_config"], "client_allowed_sans": ["scraper.example"]}}, MTLS),
    ],
)
def test_a_reload_that_would_turn_tls_or_client_checks_off_is_refused(web, certs, caplog, start, replacement):
    server = web(start)
    replace_atomically(certs / "web.yml", yaml.safe_dump(replacement))
    with tls_client(certs, client_cert="client_auth_type" in start["tls_server_config"]) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/metrics").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)
    if "client_auth_type" in start["tls_server_config"]:
        with tls_client(certs) as client, pytest.raises(httpx.HTTPError):  # still no entry without a certificate
            client.get(f"https://127.0.0.1:{server.port}/metrics")
    assert "needs a restart" in logged(caplog)


def test_a_half_written_certificate_pair_keeps_the_old_one(web, certs, tmp_path, caplog):
    server = web(TLS)
    url = f"https://127.0.0.1:{server.port}/metrics"
    new_ca = trustme.CA()
    new_ca.cert_pem.write_to_path(tmp_path / "new-ca.crt")
    new = new_ca.issue_cert("127.0.0.1")
    pem = new.cert_chain_pems[0].bytes()
    (certs / "server.crt").write_bytes(pem[: len(pem) // 2])  # the certificate, half written
    with tls_client(certs) as client:
        assert client.get(url).status_code == 200
    new.cert_chain_pems[0].write_to_path(certs / "server.crt")  # whole, but the key is still the old one
    with tls_client(certs) as client:
        assert client.get(url).status_code == 200
    with tls_client(certs, ca_file="new-ca.crt") as client, pytest.raises(httpx.HTTPError):
        client.get(url)
    new.private_key_pem.write_to_path(certs / "server.key")  # the pair is complete: it takes over
    with tls_client(certs, ca_file="new-ca.crt") as client:
        assert client.get(url).status_code == 200
    assert logged(caplog).count("web config not reloaded") >= 2


def test_http2_is_refused_with_a_clear_error_and_false_is_accepted(tmp_path):
    (tmp_path / "web.yml").write_text("http_server_config: {http2: true}\n")
    with pytest.raises(
        WebConfigError, match=r"http_server_config\.http2: not supported: this exporter serves HTTP/1\.1"
    ):
        load_web_config(tmp_path / "web.yml")
    (tmp_path / "web.yml").write_text("http_server_config: {http2: false}\n")
    assert load_web_config(tmp_path / "web.yml").config.tls is None


def test_a_refused_change_is_read_again_when_its_certificates_are_complete(web, certs, caplog):
    # TLS is off, so no certificate is watched yet: the new key's arrival must still be seen.
    server = web(AUTH)
    (certs / "server.key").rename(certs / "server.key.later")
    replace_atomically(certs / "web.yml", yaml.safe_dump({**AUTH, **TLS}))
    url = f"127.0.0.1:{server.port}/metrics"
    assert httpx.get(f"http://{url}", auth=("prometheus", PASSWORD)).status_code == 200  # refused: still plain
    (certs / "server.key.later").rename(certs / "server.key")
    deadline = time.monotonic() + 10
    while True:
        try:
            with tls_client(certs) as client:
                assert client.get(f"https://{url}", auth=("prometheus", PASSWORD)).status_code == 200
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the completed pair was never loaded"
            time.sleep(0.1)
    assert logged(caplog).count("web config not reloaded") == 1  # the retries repeat nothing already said


@pytest.mark.parametrize("value", ["default-src \u2019self\u2019", "none\r\nSet-Cookie: session=1"])
def test_a_header_value_that_cannot_be_sent_as_it_is_is_refused_and_requests_are_still_answered(
    web, certs, caplog, value
):
    # A typographic quote cannot be encoded into a response head (every request, /-/healthy
    # included, lost its connection); a line break would add a header of its own.
    server = web(AUTH)
    replace_atomically(
        certs / "web.yml",
        yaml.safe_dump(
            {**AUTH, "http_server_config": {"headers": {"Content-Security-Policy": value}}}, allow_unicode=True
        ),
    )
    for path in ("/-/healthy", "/metrics"):
        response = httpx.get(f"http://127.0.0.1:{server.port}{path}", auth=("prometheus", PASSWORD))
        assert response.status_code == 200
        assert "content-security-policy" not in response.headers and "set-cookie" not in response.headers
    assert "Content-Security-Policy: expected printable ASCII" in logged(caplog)


@pytest.mark.parametrize("file", ["server.crt", "server.key", "ca.crt"])
def test_a_certificate_file_replaced_by_a_fifo_is_refused_and_requests_go_on(web, certs, caplog, file):
    """ssl reads a FIFO until a writer comes, under the watcher's lock: every request, /-/healthy
    included, would wait behind it. Mutation: load_cert_chain/load_verify_locations by path
    without the non-blocking look first."""
    server = web({**AUTH, **MTLS})
    try:
        with tls_client(certs, client_cert=True) as client:  # the client reads ca.crt too: before the swap
            (certs / file).unlink()
            os.mkfifo(certs / file)
            for path in ("/-/healthy", "/metrics"):
                response = client.get(f"https://127.0.0.1:{server.port}{path}", auth=("prometheus", PASSWORD))
                assert response.status_code == 200
    finally:  # a reader blocked on it (without the fix) is let go
        with contextlib.suppress(OSError):
            os.close(os.open(certs / file, os.O_WRONLY | os.O_NONBLOCK))
    assert "not a regular file" in logged(caplog)


@pytest.mark.parametrize(
    "hashed", [HASH[:30], HASH[:4] + "xx" + HASH[6:], HASH[:4] + "31" + HASH[6:], HASH + "x", "$2y$" + "x" * 56]
)
def test_a_bcrypt_hash_that_is_not_whole_is_refused_at_load(tmp_path, hashed):
    """A hash cut short or with a cost that is not a number made every unknown user's check a 500
    with a traceback; cost 31 would take hours per check."""
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.prometheus: expected a whole bcrypt hash") as info:
        load_web_config(tmp_path / "web.yml")
    assert hashed not in str(info.value)


def test_a_reload_that_would_lower_min_version_is_refused(web, certs, caplog):
    strict = {"tls_server_config": {**TLS["tls_server_config"], "min_version": "TLS13"}}
    server = web(strict)
    replace_atomically(certs / "web.yml", yaml.safe_dump(TLS))  # min_version back to the default, TLS12
    tls12 = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_client(certs) as client:
        assert client.get(f"https://127.0.0.1:{server.port}/metrics").status_code == 200  # the reload was looked at
    with httpx.Client(verify=tls12, timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.get(f"https://127.0.0.1:{server.port}/metrics")
    assert "it would lower min_version from TLS13 to TLS12" in logged(caplog)


def test_an_encrypted_key_is_refused_without_asking_a_terminal_for_its_passphrase(certs):
    """ssl asks /dev/tty for the passphrase of an encrypted key and waits for an answer: an
    exporter started in a terminal hung at start-up, or on a reload under the watcher's lock,
    with every request behind it. The child here has a terminal; the test answers any prompt
    with empty lines, so that it never hangs, and then says it was asked."""
    import pty
    import select
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((certs / "server.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (certs / "server.key").write_bytes(encrypted)
    (certs / "web.yml").write_text(yaml.safe_dump(TLS))
    child = (
        "import os, sys\n"
        "os.close(os.open(sys.argv[1], os.O_RDWR))  # the session's controlling terminal\n"
        "from exporter.webconfig import WebConfigError, load_web_config\n"
        "try:\n"
        "    load_web_config(sys.argv[2])\n"
        "except WebConfigError as exc:\n"
        "    print('refused:', exc, flush=True)\n"
    )
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", child, os.ttyname(slave), str(certs / "web.yml")],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        output = b""
        while True:
            if not select.select([master], [], [], 60)[0]:  # a hang guard, not a time limit under test
                process.kill()
                pytest.fail(f"the child hangs; it said {output!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child has gone
                break
            if not chunk:
                break
            output += chunk
            if b"pass phrase" in chunk.lower():
                os.write(master, b"\n\n\n")
        process.wait()
    finally:
        os.close(master)
    text = output.decode(errors="replace")
    assert "pass phrase" not in text.lower()
    assert "refused:" in text and "server.key" in text and "encrypted" in text


@pytest.mark.parametrize(
    "key, value",
    [("client_auth_type", ["RequireAndVerifyClientCert"]), ("min_version", {"TLS13": None}), ("max_version", [])],
)
def test_a_tls_setting_that_is_a_list_or_a_mapping_is_refused_and_requests_are_still_answered(
    web, certs, caplog, key, value
):
    """`x in dict` of a list raised TypeError out of the watcher: no request, /-/healthy
    included, was answered until the file was fixed."""
    server = web({**AUTH, **TLS})
    bad = {**AUTH, "tls_server_config": {**TLS["tls_server_config"], key: value}}
    with pytest.raises(WebConfigError, match=rf"tls_server_config\.{key}: expected one of"):
        (certs / "bad.yml").write_text(yaml.safe_dump(bad))
        load_web_config(certs / "bad.yml")
    replace_atomically(certs / "web.yml", yaml.safe_dump(bad))
    with tls_client(certs) as client:
        for path in ("/-/healthy", "/metrics"):
            response = client.get(f"https://127.0.0.1:{server.port}{path}", auth=("prometheus", PASSWORD))
            assert response.status_code == 200
    assert f"tls_server_config.{key}: expected one of" in logged(caplog)


def test_a_key_written_twice_in_the_web_config_is_refused(certs):
    # Last one wins would let a second, empty basic_auth_users turn auth off at start-up.
    (certs / "web.yml").write_text(f"basic_auth_users:\n  prometheus: {HASH}\nbasic_auth_users:\n")
    with pytest.raises(WebConfigError, match=r"line 3.*twice"):
        load_web_config(certs / "web.yml")


@pytest.mark.parametrize(
    "text",
    [
        "tls_server_config: " + "[" * 20000 + "]" * 20000 + "\n",
        "tls_server_config:\n  min_version: " + "9" * 5000 + "\n",
        "basic_auth_users: {? [prometheus]: x}\n",  # TypeError out of the check for keys written twice
    ],
)
def test_web_config_yaml_that_cannot_be_built_is_refused_and_requests_are_still_answered(web, certs, caplog, text):
    # RecursionError or ValueError escaped the watcher: the request that saw the change failed,
    # and the change was neither logged as refused nor read again.
    (certs / "bad.yml").write_text(text)
    with pytest.raises(WebConfigError, match="not valid YAML"):
        load_web_config(certs / "bad.yml")
    server = web(AUTH)
    replace_atomically(certs / "web.yml", text)
    for path in ("/-/healthy", "/metrics"):
        response = httpx.get(f"http://127.0.0.1:{server.port}{path}", auth=("prometheus", PASSWORD))
        assert response.status_code == 200
    assert "web config not reloaded" in logged(caplog)


def test_a_certificate_path_with_a_nul_character_is_refused(certs):
    (certs / "web.yml").write_text('tls_server_config:\n  cert_file: "server.crt\\0"\n  key_file: server.key\n')
    with pytest.raises(WebConfigError, match="NUL character"):
        load_web_config(certs / "web.yml")
