"""Reading a small file that someone else may be editing, replacing or sabotaging.

Every file the exporter reads at run time (config.yaml, secret files, the web config, the
login state) goes through here: a FIFO in its place must not hold a reload or the start
forever, and /dev/zero or a runaway log behind a symlink must not fill the memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# The system's whole CA bundle is about 220 kB.
MAX_CA_FILE_BYTES = 4 * 1024 * 1024


class UnreadableFile(OSError):
    """The file cannot be used. The message names the path and the reason, never its content.

    An OSError, with the reason as its strerror, so that it is handled like any failure to
    open a file.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.strerror = reason


def read_small_file(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes`, or UnreadableFile."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or type(exc).__name__) from None
    except ValueError:  # "embedded null byte": no file can have that name
        raise UnreadableFile(path, "the name has a NUL character") from None
    try:
        # Looked at on the descriptor, which is closed whatever happens: os.fdopen of a
        # directory raised and left it open, one lost per retry of a web config that is a
        # directory (a volume mounted at the file's path), until accept() ran out of them.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile(path, "not a regular file")
        content = b""
        while len(content) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(content))
            if not chunk:
                break
            content += chunk
    except UnreadableFile:
        raise
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(content) > max_bytes:
        raise UnreadableFile(path, f"larger than {max_bytes} bytes")
    return content


def read_small_text(path: Path, max_bytes: int) -> str:
    """As read_small_file, decoded as UTF-8."""
    try:
        return read_small_file(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(path, "not UTF-8 text") from None


def read_pem_bundle(path: Path) -> str:
    """A PEM file of CA certificates as ssl's `cadata` takes it: ASCII only.

    The lines that are not ASCII are comments (curl's bundle names its CAs in UTF-8), never
    part of a PEM block.
    """
    # A byte order mark (Notepad's UTF-8) would make the first BEGIN line look like a comment.
    bundle = read_small_text(path, MAX_CA_FILE_BYTES).removeprefix("\ufeff")
    return "\n".join(line for line in bundle.splitlines() if line.isascii())
