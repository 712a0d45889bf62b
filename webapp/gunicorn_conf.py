"""gunicorn settings shared by run.py and docker-compose (`gunicorn -c python:webapp.gunicorn_conf`).

Every runtime file stays under DATA_DIR: gunicorn's default control socket lives in the home folder, where
a second installation on the same machine (another checkout, the test suite's) would take it over and
delete it when it stops.
"""

import os
from pathlib import Path

_BASE_DIR = Path(__file__).resolve().parent.parent
_RUN_DIR = Path(os.environ.get("DATA_DIR") or _BASE_DIR / "var").resolve() / "run"
_RUN_DIR.mkdir(parents=True, exist_ok=True)

control_socket = str(_RUN_DIR / "gunicorn.ctl")
pidfile = str(_RUN_DIR / "gunicorn.pid")
# Long uploads and exports: a worker is killed only when it is silent for this long.
timeout = 300
