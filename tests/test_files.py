"""exporter/files.py: a small regular file read whole, or refused; never a hang, never unbounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.files import UnreadableFile, read_small_file, read_small_text


def test_a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(tmp_path: Path):
    # Mutation: `>=` for `>` refused a file of exactly the limit (a secret of 64 KiB).
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_small_file(path, 100) == b"x" * 100
    path.write_bytes(b"x" * 101)
    with pytest.raises(UnreadableFile, match="larger than 100 bytes"):
        read_small_file(path, 100)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path, kind: str):
    path = tmp_path / "f"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(UnreadableFile, match="not a regular file"):
        read_small_file(path, 100)


def test_bytes_that_are_not_utf8_are_refused_without_echoing_them(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"password: s\xe9cret\n")
    with pytest.raises(UnreadableFile) as info:
        read_small_text(path, 100)
    assert info.value.reason == "not UTF-8 text" and "cret" not in str(info.value)


def test_no_descriptor_is_left_open(tmp_path: Path):
    # Mutation: the descriptor of a refused file never closed (a reload every second leaks one each).
    path = tmp_path / "f"
    path.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(UnreadableFile):
            read_small_file(path, 100)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_pem_bundle_saved_with_a_byte_order_mark_keeps_its_first_certificate(tmp_path: Path):
    # Notepad writes UTF-8 with a BOM: the first line, `\ufeff-----BEGIN CERTIFICATE-----`, was
    # taken for a non-ASCII comment and left out, and with it the bundle's first CA, silently.
    import ssl

    import trustme

    from exporter.files import read_pem_bundle

    first, second = trustme.CA(), trustme.CA()
    path = tmp_path / "ca.pem"
    path.write_bytes(b"\xef\xbb\xbf" + first.cert_pem.bytes() + second.cert_pem.bytes())
    context = ssl.create_default_context(cadata=read_pem_bundle(path))
    assert len(context.get_ca_certs()) == 2


def test_a_path_with_a_nul_character_is_unreadable_not_a_value_error(tmp_path: Path):
    # os.open raises ValueError for it: a `password_file: "pw\0"` or a cert_file so written
    # escaped load_config and the web config watcher (a SIGHUP ended the process).
    with pytest.raises(UnreadableFile, match="NUL"):
        read_small_file(tmp_path / "pw\0x", 100)
