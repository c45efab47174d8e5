import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from exporter import strict_yaml
from exporter.config import ConfigError, RetryPolicy, Secret, load_config, parse_duration

SECRET_VALUES = {
    "IBANERA_USERNAME": "alice-the-user",
    "IBANERA_PASSWORD": "pa55-Very-Secret",
    "IBANERA_TOTP_SECRET": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
}
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"

MINIMAL = """
connections:
  - name: main
    username: alice
    password: ${IBANERA_PASSWORD}
    totp_secret: JBSWY3DPEHPK3PXP
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env=SECRET_VALUES):
    return load_config(write(tmp_path, text), environ=env)


def error_of(tmp_path: Path, text: str, env=SECRET_VALUES) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    for secret in SECRET_VALUES.values():
        assert secret not in message
    return message


def test_shipped_config_is_valid_with_its_environment_variables():
    config = load_config(SHIPPED_CONFIG, environ=SECRET_VALUES)
    (connection,) = config.connections
    assert connection.base_url == "https://public-api.ibanera.com"
    assert connection.password.reveal() == "pa55-Very-Secret"
    assert config.poll_interval == 60 and config.login_backoff == 900
    assert config.retry == RetryPolicy(max_attempts=4, initial_backoff=1.0, max_backoff=30.0)
    assert config.low_available_balance == {"USD": Decimal("10000"), "USDC": Decimal("5000")}


def test_defaults(tmp_path):
    config = load(tmp_path, MINIMAL)
    (connection,) = config.connections
    assert (connection.base_url, connection.page_size, connection.totp_secret_encoding) == (
        "https://public-api.ibanera.com",
        100,
        "base32",
    )
    assert config.request_timeout == 10 and config.low_available_balance == {}


@pytest.mark.parametrize(
    "text, seconds", [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (45, 45), (2.5, 2.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text, "poll_interval") == seconds


@pytest.mark.parametrize("bad", ["fast", "10 s", "-5s", "0s", 0, True, None, "5x"])
def test_bad_durations_name_the_key(bad):
    with pytest.raises(ConfigError, match="poll_interval"):
        parse_duration(bad, "poll_interval")


def test_secrets_from_files_relative_to_the_config(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("from-a-file\n")
    text = MINIMAL.replace("password: ${IBANERA_PASSWORD}", "password_file: secrets/password")
    assert load(tmp_path, text).connections[0].password.reveal() == "from-a-file"


def test_secrets_never_show_in_repr(tmp_path):
    config = load(tmp_path, MINIMAL)
    assert "pa55-Very-Secret" not in repr(config)
    assert "JBSWY3DPEHPK3PXP" not in repr(config)
    assert repr(Secret("x")) == "Secret('********')"


def test_dollar_dollar_is_a_literal_dollar(tmp_path):
    config = load(tmp_path, MINIMAL.replace("${IBANERA_PASSWORD}", "'pa$$word'"))
    assert config.connections[0].password.reveal() == "pa$word"


@pytest.mark.parametrize(
    "change, key, says",
    [
        (("  - name: main", "  - name: main\n    colour: blue"), "connections[0].colour", "unknown key"),
        (("connections:", "pol_interval: 60s\nconnections:"), "pol_interval", "unknown key"),
        (("connections:", "poll_interval: soon\nconnections:"), "poll_interval", "duration"),
        (("connections:", "login_backoff: 1m\nconnections:"), "login_backoff", "at least 10m"),
        (("connections:", "retry: {max_attempts: many}\nconnections:"), "retry.max_attempts", "whole number"),
        (
            ("connections:", "retry: {initial_backoff: 10s, max_backoff: 1s}\nconnections:"),
            "retry.max_backoff",
            "shorter",
        ),
        (("    username: alice\n", ""), "connections[0].username", "required"),
        (
            ("password: ${IBANERA_PASSWORD}", "password: ${NOT_SET_ANYWHERE}"),
            "connections[0].password",
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            ("password: ${IBANERA_PASSWORD}", "password: 12345"),
            "connections[0].password",
            "expected a non-empty string, got a number",
        ),
        (
            ("password: ${IBANERA_PASSWORD}", "password_file: /nonexistent/pw"),
            "connections[0].password_file",
            "cannot read /nonexistent/pw",
        ),
        (
            ("password: ${IBANERA_PASSWORD}", "password: x\n    password_file: /x"),
            "connections[0].password",
            "not both",
        ),
        (
            ("totp_secret: JBSWY3DPEHPK3PXP", "totp_secret: not-base-32!"),
            "connections[0].totp_secret",
            "not valid base32",
        ),
        (
            ("    username: alice\n", "    username: alice\n    totp_secret_encoding: hex\n"),
            "connections[0].totp_secret_encoding",
            "base32, ascii",
        ),
        (
            ("    username: alice\n", "    username: alice\n    page_size: 0\n"),
            "connections[0].page_size",
            "between 1 and 10000",
        ),
        (("    username: alice\n", "    username: alice\n    base_url: ftp://x\n"), "connections[0].base_url", "http"),
        (("  - name: main", "  - name: 'has space'"), "connections[0].name", "letters"),
        (
            ("connections:", "thresholds: {low_available_balance: {USD: lots}}\nconnections:"),
            "thresholds.low_available_balance.USD",
            "number",
        ),
        (
            ("connections:", "thresholds: {low_available_card_balance: {EUR: []}}\nconnections:"),
            "thresholds.low_available_card_balance.EUR",
            "number",
        ),
        (
            ("    username: alice\n", "    username: alice\n    cards: yes please\n"),
            "connections[0].cards",
            "true or false",
        ),
        (
            ("    username: alice\n", "    username: alice\n    cards_holder_name_label: true\n"),
            "connections[0].cards_holder_name_label",
            "needs cards: true",
        ),
        (
            ("    username: alice\n", "    username: alice\n    ca_file: /nonexistent/ca.pem\n"),
            "connections[0].ca_file",
            "cannot read",
        ),
    ],
)
def test_each_mistake_names_its_key_and_file(tmp_path, change, key, says):
    message = error_of(tmp_path, MINIMAL.replace(*change))
    assert message.startswith(str(tmp_path / "config.yaml"))
    assert key in message and says in message


def test_duplicate_connection_names(tmp_path):
    second = MINIMAL.split("connections:\n")[1]
    message = error_of(tmp_path, MINIMAL + second)
    assert "connections[1].name" in message and "used by another" in message


def test_no_connections(tmp_path):
    assert "connections: expected a list of one or more" in error_of(tmp_path, "connections: []")


def test_invalid_yaml_says_where(tmp_path):
    message = error_of(tmp_path, "connections:\n\t- name: main\n")
    assert "line 2, column 1" in message and "tab" in message


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config("/nonexistent/config.yaml")


def test_secret_that_is_mistyped_as_a_mapping_is_not_echoed(tmp_path):
    message = error_of(tmp_path, MINIMAL.replace("password: ${IBANERA_PASSWORD}", "password: {pa55-Very-Secret: 1}"))
    assert "connections[0].password" in message and "a mapping" in message


def test_cards_and_their_thresholds(tmp_path):
    text = MINIMAL.replace(
        "    username: alice\n", "    username: alice\n    cards: true\n    cards_holder_name_label: true\n"
    )
    config = load(tmp_path, text + "thresholds: {low_available_card_balance: {USD: 200.5}}\n")
    assert config.connections[0].cards and config.connections[0].cards_holder_name_label
    assert config.low_available_card_balance == {"USD": Decimal("200.5")}
    assert not load(tmp_path, MINIMAL).connections[0].cards


def _load_within_seconds(path: Path, seconds: float = 5.0) -> str:
    """The ConfigError of loading `path`, which must come at once: a hang fails the test, not the suite."""
    outcome: list[BaseException | object] = []

    def attempt() -> None:
        try:
            outcome.append(load_config(path, environ=SECRET_VALUES))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"loading {path.name} still blocks after {seconds}s"
    assert isinstance(outcome[0], ConfigError), outcome[0]
    return str(outcome[0])


def test_a_fifo_in_place_of_the_config_file_is_refused_at_once(tmp_path):
    """An editor or a sabotage leaves a FIFO where config.yaml was: a reload must not wait for a writer."""
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    assert "cannot read the config file: not a regular file" in _load_within_seconds(path)


def test_an_endless_config_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "config.yaml"
    path.symlink_to("/dev/zero")
    assert "not a regular file" in _load_within_seconds(path)
    path.unlink()
    path.write_bytes(b"#" * (2 * 1024 * 1024))
    assert "larger than 1048576 bytes" in _load_within_seconds(path)


@pytest.mark.parametrize("make", [os.mkfifo, lambda p: p.symlink_to("/dev/zero")], ids=["fifo", "dev-zero"])
def test_a_secret_file_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path, make):
    make(tmp_path / "password")
    path = write(tmp_path, MINIMAL.replace("password: ${IBANERA_PASSWORD}", "password_file: password"))
    assert "connections[0].password_file: cannot read" in _load_within_seconds(path)


@pytest.mark.parametrize("field, value", [("name", '"main\\n"'), ("base_url", '"https://api.example\\n"')])
def test_a_final_line_break_is_not_part_of_a_name_or_url(tmp_path, field, value):
    """A regex with `$` lets "main\\n" pass: a label and a state file name with a line break."""
    text = (
        MINIMAL.replace("  - name: main\n", f"  - name: main\n    {field}: {value}\n")
        if field == "base_url"
        else MINIMAL.replace("name: main", f"name: {value}")
    )
    assert f"connections[0].{field}" in error_of(tmp_path, text)


def test_a_ca_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "ca.pem")
    path = write(tmp_path, MINIMAL + "    ca_file: ca.pem\n")
    assert "connections[0].ca_file: cannot read" in _load_within_seconds(path)


def test_a_ca_file_is_read_with_the_config_and_its_contents_make_the_connection(tmp_path):
    """A CA rotated at the same path is a changed connection for a reload (which compares
    ConnectionConfigs), and the client trusts what was read, not what the file holds later."""
    (tmp_path / "ca.pem").write_text("# Főtanúsítvány\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    path = write(tmp_path, MINIMAL + "    ca_file: ca.pem\n")
    first = load_config(path, environ=SECRET_VALUES).connections[0]
    assert first.ca_file is not None and first.ca_file.pem.startswith("-----BEGIN CERTIFICATE-----")  # comment left out
    assert "AAAA" not in repr(first)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    assert load_config(path, environ=SECRET_VALUES).connections[0] != first
    assert (
        load_config(path, environ=SECRET_VALUES).connections[0]
        == load_config(path, environ=SECRET_VALUES).connections[0]
    )


def _merge_bomb(levels: int) -> str:
    """A mapping that merges the one before it twice, inline and through its alias, `levels` deep."""
    inner = "&a0 {x: 1}"
    for level in range(1, levels):
        inner = f"&a{level} {{<<: [{inner}, *a{level - 1}], k{level}: 1}}"
    return inner


def test_merges_of_merges_of_one_alias_are_read_in_linear_time(tmp_path):
    # 40 levels in 1 kB: before PyYAML 6.0.4 each level doubled the merged keys (2^40: the
    # process died on a SIGHUP). A child process, so that a regression fails instead of hanging.
    (tmp_path / "bomb.yaml").write_text(f"top: {_merge_bomb(40)}\n")
    script = (
        "import sys; from exporter.strict_yaml import load_yaml; print(len(load_yaml(open(sys.argv[1]).read())['top']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "bomb.yaml")], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "40", result.stderr  # x and k1..k39


def test_each_mapping_is_checked_for_keys_written_twice_once(monkeypatch):
    # Without a record of the mappings checked, the check walked every merged alias again:
    # 2^levels walks, hours for a 1 kB file, before any key was counted.
    walks = []
    check = strict_yaml._StrictLoader._check_unique_keys

    def counted(loader, node):
        walks.append(node)
        assert len(walks) < 1000, "the same mappings walked again and again"
        check(loader, node)

    monkeypatch.setattr(strict_yaml._StrictLoader, "_check_unique_keys", counted)
    assert strict_yaml.load_yaml(f"top: {_merge_bomb(12)}\n")["top"]["k11"] == 1
    assert strict_yaml.load_yaml(
        "base: &base {a: 1}\nmore: &more {a: 2, b: 3}\nmid: &mid {<<: [*base, *more]}\ntop: {<<: *mid, c: 4}\n"
    )["top"] == {"a": 1, "b": 3, "c": 4}  # merged keys, first one wins: not keys written twice


@pytest.mark.parametrize(
    "text, says",
    [
        ("connections: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
        ("max_login_refusals: " + "9" * 5000 + "\n" + MINIMAL, "cannot be read as a value"),
        ("installed: 2026-02-30\n" + MINIMAL, "cannot be read as a value"),  # a date that does not exist
        # A list or a mapping as a key: the check for keys written twice raised TypeError.
        ("connections: {? [1]: x}\n", "unhashable key"),
        ("thresholds:\n  low_available_balance: {? {USD: 1}: 5}\n" + MINIMAL, "unhashable key"),
    ],
)
def test_yaml_that_cannot_be_built_is_a_config_error(tmp_path, text, says):
    # RecursionError or ValueError escaped load_config: at a SIGHUP it ended the main loop,
    # and the process with it; POST /-/reload answered 500 with a traceback and
    # ibanera_config_last_reload_successful stayed 1.
    message = error_of(tmp_path, text)
    assert says in message and len(message) < 400, message


def test_a_secret_file_saved_with_a_byte_order_mark_is_read_without_it(tmp_path):
    # Notepad's UTF-8 starts with U+FEFF: it was sent as the password's first character, and
    # every login was refused, each one counting towards Ibanera's lock.
    (tmp_path / "password").write_bytes(b"\xef\xbb\xbffrom-notepad\r\n")
    text = MINIMAL.replace("password: ${IBANERA_PASSWORD}", "password_file: password")
    assert load(tmp_path, text).connections[0].password.reveal() == "from-notepad"


@pytest.mark.parametrize(
    "line, key",
    [
        ("poll_interval: 1" + "0" * 400, "poll_interval"),  # float() of it: OverflowError
        ('max_response_size: "' + "9" * 5000 + '"', "max_response_size"),  # int() of it: ValueError
        ('max_response_size: "' + "9" * 4000 + 'GiB"', "max_response_size"),  # refused, and never echoed whole
    ],
)
def test_a_duration_or_size_too_large_to_read_is_a_config_error(tmp_path, line, key):
    # The error escaped load_config as OverflowError or ValueError: a SIGHUP ended the process.
    message = error_of(tmp_path, line + "\n" + MINIMAL)
    assert f"{key}:" in message and len(message) < 400, message[:500]


@pytest.mark.parametrize("key", ["password_file", "ca_file"])
def test_a_home_folder_that_cannot_be_found_is_a_config_error(tmp_path, monkeypatch, key):
    # Path.expanduser raises RuntimeError for ~nosuchuser, and for ~ without HOME or a passwd
    # entry (a container's arbitrary uid): with a relative --config.file it escaped load_config.
    monkeypatch.chdir(tmp_path)
    line = "password_file" if key == "password_file" else "password: x\n    ca_file"
    Path("config.yaml").write_text(
        MINIMAL.replace("password: ${IBANERA_PASSWORD}", f"{line}: ~nosuchuser42/file"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=rf"connections\[0\]\.{key}: .*home folder"):
        load_config("config.yaml", environ=SECRET_VALUES)


def _laughs(levels: int) -> str:
    """A list of 10 lists of 10 ..., `levels` deep, written in a few hundred bytes through aliases."""
    text = "&l0 [x, x, x, x, x, x, x, x, x, x]"
    for level in range(1, levels):
        text = f"&l{level} [{text}" + f", *l{level - 1}" * 9 + "]"
    return text


@pytest.mark.parametrize("key", ["poll_interval", "max_response_size"])
def test_a_wrong_value_built_from_aliases_is_named_by_its_type(tmp_path, key):
    # Its repr, cut short only afterwards, was 10^levels items: a minute and gigabytes at 9 levels.
    message = error_of(tmp_path, f"{key}: {_laughs(6)}\n" + MINIMAL)
    assert f"{key}: expected a" in message and message.endswith("got a list"), message


_HUGE_HEX = "0x" + "f" * 4000  # about 4800 decimal digits: int() reads it, str() of it raises ValueError


@pytest.mark.parametrize(
    "text",
    [
        f"max_response_size: {_HUGE_HEX}\n" + MINIMAL,
        f"max_login_refusals: {_HUGE_HEX}\n" + MINIMAL,
        f"thresholds:\n  low_available_balance:\n    USD: {_HUGE_HEX}\n" + MINIMAL,
        f"? {_HUGE_HEX}\n: 1\n" + MINIMAL,
        MINIMAL + f"    accounts:\n      ? {_HUGE_HEX}\n      : {{name: x}}\n",
        MINIMAL + f"    page_size: {_HUGE_HEX}\n",
    ],
)
def test_a_hexadecimal_number_too_long_to_print_is_a_config_error(tmp_path, text):
    # int() limits the digits of a decimal number only: a hex one was read, and every message
    # (and Decimal(str(...))) that printed it raised ValueError out of load_config.
    message = error_of(tmp_path, text)
    assert "4300 digits" in message and len(message) < 300, message


def test_a_hexadecimal_number_too_long_to_print_is_a_web_config_error(tmp_path):
    from exporter.webconfig import WebConfigError, load_web_config

    (tmp_path / "web.yaml").write_text(f"tls_server_config:\n  ? {_HUGE_HEX}\n  : 1\n")
    with pytest.raises(WebConfigError, match="4300 digits"):
        load_web_config(tmp_path / "web.yaml")


_LONG = "x" * 100_000


@pytest.mark.parametrize(
    "change",
    [
        ("name: main", f"name: {_LONG}"),
        ("username: alice", f"username: alice\n    base_url: {_LONG}"),
        ("username: alice", f"username: alice\n    totp_secret_encoding: {_LONG}"),
        ("username: alice", f"username: alice\n    page_size: {_LONG}"),
    ],
)
def test_a_long_wrong_string_is_shown_cut_short(tmp_path, change):
    message = error_of(tmp_path, MINIMAL.replace(*change))
    assert "xxx" in message and len(message) < 300, message[:300]


def test_a_long_wrong_header_value_is_shown_cut_short(tmp_path):
    from exporter.webconfig import WebConfigError, load_web_config

    (tmp_path / "web.yaml").write_text(f"http_server_config:\n  headers:\n    X-Frame-Options: {_LONG}\n")
    with pytest.raises(WebConfigError) as info:
        load_web_config(tmp_path / "web.yaml")
    assert "xxx" in str(info.value) and len(str(info.value)) < 300, str(info.value)[:300]


@pytest.mark.parametrize(
    "text",
    [
        f"? {_LONG}\n: 1\n" + MINIMAL,
        MINIMAL + f"    ? {_LONG}\n    : 1\n",
        MINIMAL + f"    accounts:\n      ? {_LONG}\n      : {{name: x}}\n",
        MINIMAL + f"    accounts:\n      ? 0x{'f' * 3000}\n      : {{name: x}}\n",
        f"thresholds:\n  low_available_balance:\n    ? {_LONG}\n    : -1\n" + MINIMAL,
    ],
)
def test_a_long_wrong_key_is_shown_cut_short(tmp_path, text):
    message = error_of(tmp_path, text)
    assert len(message) < 500, message[:500]


@pytest.mark.parametrize(
    "text",
    [
        f"? {_LONG}\n: 1\n",
        f"tls_server_config:\n  ? {_LONG}\n  : 1\n",
        f"http_server_config:\n  ? {_LONG}\n  : 1\n",
        f"http_server_config:\n  headers:\n    ? {_LONG}\n    : x\n",
    ],
)
def test_a_long_wrong_key_is_shown_cut_short_in_the_web_config(tmp_path, text):
    from exporter.webconfig import WebConfigError, load_web_config

    (tmp_path / "web.yaml").write_text(text)
    with pytest.raises(WebConfigError) as info:
        load_web_config(tmp_path / "web.yaml")
    assert len(str(info.value)) < 300, str(info.value)[:300]


@pytest.mark.parametrize("key", ["max_login_refusals", "retry.max_attempts", "connections.page_size"])
def test_a_whole_number_out_of_range_is_shown_cut_short(tmp_path, key):
    number = "0b" + "1" * 13_000  # about 3900 digits: read, and out of every range
    if key == "max_login_refusals":
        text = f"max_login_refusals: {number}\n" + MINIMAL
    elif key == "retry.max_attempts":
        text = f"retry: {{max_attempts: {number}}}\n" + MINIMAL
    else:
        text = MINIMAL + f"    page_size: {number}\n"
    message = error_of(tmp_path, text)
    assert "must be between" in message and len(message) < 300, message[:300]
