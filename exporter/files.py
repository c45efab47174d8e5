"""Reading a configuration or secret file that someone else may have replaced with anything.

A FIFO would block the reader until a writer comes (a reload would hang, and with it
SIGTERM's clean exit), and a device such as /dev/zero, or a runaway file, would be read
until memory runs out: only regular files are read, and only up to a limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_CONFIG_CHARS = 4 * 1024 * 1024  # config.yaml and --web.config.file
MAX_SECRET_CHARS = 64 * 1024  # a username, password or TOTP secret file


def read_text(path: Path, limit: int) -> str:
    """The file's UTF-8 text; OSError (with strerror) if it is not a regular file or is over `limit` characters."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; no effect on a regular file.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, encoding="utf-8") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        text = file.read(limit + 1)
    if len(text) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} characters")
    return text
