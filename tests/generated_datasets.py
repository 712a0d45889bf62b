"""Synthetic datasets for the test data builders, written once per test process and copied after that.

``mlcore.synthetic.generate_dataset`` is deterministic (its seed, sizes and the folder's name decide every
byte), and the builders that hundreds of tests call (``two_taxonomy_project``, ``build_viewer_project``) ask
for the same few datasets again and again; drawing and PNG-encoding them took 0.1 to 0.3 s a project.
A copy of the files is the same input for the import. Tests about the generator itself, or that edit a
dataset, call ``generate_dataset`` directly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlcore.synthetic import generate_dataset

_written: dict[tuple, Path] = {}
_store: tempfile.TemporaryDirectory | None = None  # removed when the process ends


def generated_dataset(root: Path, format: str = "seed", **options) -> Path:
    """``generate_dataset(root, format, **options)``, copied from the first call's files after that."""
    global _store
    root = Path(root)
    key = (root.name, format, tuple(sorted((name, repr(value)) for name, value in options.items())))
    written = _written.get(key)
    if written is None:
        if _store is None:
            _store = tempfile.TemporaryDirectory(prefix="generated-datasets-")
        written = generate_dataset(Path(_store.name) / str(len(_written)) / root.name, format, **options)
        _written[key] = written
    # Into an existing folder too, as generate_dataset writes into one.
    shutil.copytree(written, root, dirs_exist_ok=True)
    return root
