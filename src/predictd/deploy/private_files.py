"""The data folder holds what only predictd's own user may read: the database (key digests, users' inputs
and outputs, webhook secrets), output images and the demo key.

A server, a worker and an admin command set their umask first, so that every file they (and their worker
subprocesses, which inherit it) create is 0600 and every folder 0700; and the files an earlier version
created 0644 are narrowed at start. The data folder itself is made private only when predictd creates it:
an operator's own folder keeps the mode the operator gave it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..config.settings import DATABASE_FILE, DEMO_KEY_FILE, OUTPUTS_FOLDER

PRIVATE_UMASK = 0o077


def keep_private(data_dir: Path) -> None:
    """From now on this process creates private files and folders (the data folder too, when it makes it);
    what predictd made in ``data_dir`` before is narrowed to its owner. Creates nothing itself."""
    os.umask(PRIVATE_UMASK)
    for path in (data_dir / OUTPUTS_FOLDER, data_dir / DEMO_KEY_FILE, *data_dir.glob(f"{DATABASE_FILE}*")):
        _narrow(path)  # the database, its WAL, the WAL's index and the migration lock


def _narrow(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        return  # an operator's link: its target's mode is theirs
    private = 0o700 if stat.S_ISDIR(mode) else 0o600
    if stat.S_IMODE(mode) & ~private:
        path.chmod(stat.S_IMODE(mode) & private)
