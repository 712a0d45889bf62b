"""Memory bombs: each upload is imported by the worker's own code, in a process whose address space is
capped a few hundred MiB above what it holds once its modules are loaded.

A bomb is a small file that declares a huge array (a 16000 x 16000 mask inside a .mat, a .npy header, a
PNG) or an instance id that anything sized by ids would allocate for (10,000,000 or 2**31 - 1 on a 64 x 64
image). Size bombs must fail with a message naming the user's file and the limit, leaving no rows, no
media files and no staging folder; id bombs are renumbered and import whole.
"""

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from tests.conftest import ROOT, subprocess_env
from tests.webapp.dataset_helpers import media_files, staging_leftovers, upload, zip_entries
from tests.webapp.datasets.test_dataset_import_errors import assert_nothing_left, npy_bytes, png_bytes
from webapp.datasets.models import Dataset, Label, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True)

HEADROOM = 320 << 20  # address space allowed above the loaded worker: the bombs ask for 0.4 GB to 16 GB
JSON_LIMIT = 4096  # MAX_JSON_BYTES in the capped worker, so that a JSON file over it stays small here

# Runs one job exactly as the worker does (workers.tasks.run_job), under RLIMIT_AS.
CAPPED_WORKER = """
import os, resource, sys
import django
django.setup()
import cv2, numpy, PIL.Image, scipy.io, torch  # loaded before the cap: their code is not what is measured
import mlcore.readers, webapp.datasets.importing, webapp.datasets.preparing
from workers.tasks import run_job
size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]), size + int(sys.argv[1])))
for job_id in sys.argv[2:]:
    print(job_id, run_job(int(job_id)))
"""


def mat_bomb(height: int, width: int, name: bytes = b"inst_map") -> bytes:
    """A MATLAB v5 file with one compressed uint8 variable of zeros declared height x width, written in
    pieces (the test never holds the array): 256 MB of zeros deflate to about 250 KB."""
    count = height * width
    padded_name = name + b"\0" * (-len(name) % 8)
    body = 16 + 16 + 8 + len(padded_name) + 8 + count + (-count % 8)
    head = (struct.pack("<II", 14, body) + struct.pack("<IIII", 6, 8, 9, 0)  # miMATRIX, flags: uint8 class
            + struct.pack("<IIii", 5, 8, height, width) + struct.pack("<II", 1, len(name)) + padded_name
            + struct.pack("<II", 2, count))
    deflate = zlib.compressobj(9)
    parts, zeros, left = [deflate.compress(head)], bytes(1 << 22), count + (-count % 8)
    while left:
        parts.append(deflate.compress(zeros[:min(left, len(zeros))]))
        left -= min(left, len(zeros))
    parts.append(deflate.flush())
    data = b"".join(parts)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return header + struct.pack("<II", 15, len(data)) + data


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG of zeros, encoded row by row (Pillow would hold the whole image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    deflate = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def npy_header_only(shape, dtype="<i4") -> bytes:
    """A .npy file whose header declares ``shape`` and that holds no data at all."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def tile() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def seed(mask=None, types=None, image=None) -> dict[str, bytes]:
    instance_map = np.zeros((64, 64), np.int32)
    instance_map[4:12, 4:12] = 1
    instance_map[30:40, 30:40] = 2
    return {"images/tile.png": image if image is not None else png_bytes(tile()),
            "masks/tile.npy": mask if mask is not None else npy_bytes(instance_map),
            "types/tile.npy": types if types is not None else npy_bytes(np.array([[1, 0], [2, 1]])),
            "classes.json": json.dumps({"classes": ["a", "b"]}).encode()}


def sparse_ids(big_id: int, image: bytes) -> dict[str, bytes]:
    instance_map = np.zeros((64, 64), np.int32)
    instance_map[4:12, 4:12] = 3
    instance_map[30:40, 30:40] = big_id
    return seed(mask=npy_bytes(instance_map), types=npy_bytes(np.array([[3, 1], [big_id, 0]], np.int64)),
                image=image)


def hovernet_bomb() -> dict[str, bytes]:
    return {"Images/tile.png": png_bytes(tile()), "Labels/tile.mat": mat_bomb(16000, 16000),
            "type_info.json": json.dumps({"0": ["nolabel", [0, 0, 0]], "1": ["a", [255, 0, 0]]}).encode()}


def geojson_bomb() -> dict[str, bytes]:
    feature = {"type": "Feature", "properties": {"classification": {"name": "a"}},
               "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [9, 1], [9, 9], [1, 1]]]}}
    return {"images/tile.png": png_bomb(20_000, 20_000), "tile.geojson": json.dumps([feature]).encode()}


def coco_over_the_json_limit() -> dict[str, bytes]:
    content = {"images": [{"id": 1, "file_name": "tile.png", "width": 64, "height": 64}],
               "categories": [{"id": 1, "name": "a"}], "annotations": [], "info": {"padding": "x" * JSON_LIMIT}}
    return {"annotations.json": json.dumps(content).encode(), "images/tile.png": png_bytes(tile())}


def pannuke_bomb() -> dict[str, bytes]:
    return {"images.npy": npy_header_only((1, 20000, 20000, 3), "|u1"),
            "masks.npy": npy_header_only((1, 20000, 20000, 6), "<f8")}


@pytest.fixture
def project(owner):
    project = do_create_project("bombs", actor=owner)
    project.files_before = media_files()
    return project


@pytest.fixture
def capped_imports(project, owner, api_client_for, monkeypatch):
    """Upload each dataset through the API, then run their jobs in one memory-capped worker process."""
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # no shared worker may take them
    client = api_client_for(owner)

    def run(uploads: list[tuple[dict[str, bytes], str]]) -> list[Job]:
        ids = []
        for number, (entries, fmt) in enumerate(uploads):
            response = upload(client, project.pk, zip_entries(entries), name=f"upload-{number}", format=fmt)
            assert response.status_code == 202, response.content
            ids.append(str(response.json()["id"]))
        env = subprocess_env(IMPORT_PROCESSES="1", MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1",
                             OPENBLAS_NUM_THREADS="1", MAX_JSON_BYTES=str(JSON_LIMIT))
        done = subprocess.run([sys.executable, "-c", CAPPED_WORKER, str(HEADROOM), *ids],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr  # the worker itself survived
        return [Job.objects.get(pk=job_id) for job_id in ids]

    return run


SIZE_BOMBS = [  # (dataset, format, the file the error must name, what it must say)
    (hovernet_bomb, "hovernet", "Labels/tile.mat", "MAX_IMAGE_PIXELS"),  # 16000 x 16000 inst_map in 250 KB
    (lambda: seed(image=png_bomb(20_000, 20_000)), "seed", "images/tile.png", "MAX_IMAGE_PIXELS"),
    (lambda: seed(mask=npy_header_only((100_000, 100_000))), "seed", "masks/tile.npy", "header declares"),
    (lambda: seed(types=npy_header_only((1_000_000_000, 2), "<i8")), "seed", "types/tile.npy", "header declares"),
    (pannuke_bomb, "pannuke", "images.npy", "header declares"),
    (geojson_bomb, "geojson", "images/tile.png", "MAX_IMAGE_PIXELS"),
    (coco_over_the_json_limit, "coco", "annotations.json", "MAX_JSON_BYTES"),
]


@pytest.mark.slow  # imports in capped processes
def test_size_bombs_fail_clearly_and_leave_nothing(project, capped_imports):
    jobs = capped_imports([(build(), fmt) for build, fmt, _, _ in SIZE_BOMBS])
    for job, (_, _, file_named, problem) in zip(jobs, SIZE_BOMBS):
        assert job.state == "failed", (file_named, job.state)
        assert file_named in job.error and problem in job.error, job.error
        assert "MemoryError" not in job.error and "/staging/" not in job.error, job.error
        assert not staging_leftovers(job)
    assert_nothing_left(project)


@pytest.mark.slow  # imports in capped processes
def test_huge_instance_ids_are_renumbered_and_ordinary_uploads_import(project, capped_imports):
    rng = np.random.default_rng(7)
    ordinary, *sparse = capped_imports([
        (seed(), "seed"),
        *[(sparse_ids(big_id, png_bytes(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))), "seed")
          for big_id in (10_000_000, 2**31 - 1)]])
    assert ordinary.state == "succeeded", ordinary.error
    for job in sparse:
        assert job.state == "succeeded", job.error
        nuclei = Nucleus.objects.filter(image__dataset_id=job.result["dataset_id"])
        # Ids 3 and 10,000,000 (or 2**31 - 1) become 1 and 2, in id order, with their classes.
        classes = dict(Label.objects.filter(nucleus__in=nuclei).values_list("nucleus__instance_id", "class_index"))
        assert classes == {1: 1, 2: 0}
    assert Dataset.objects.filter(project=project).count() == 3
