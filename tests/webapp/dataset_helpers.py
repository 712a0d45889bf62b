"""Helpers for tests that upload datasets through the API and wait for the import job."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from django.conf import settings

from tests.conftest import wait_for
from webapp.jobs.models import Job


def zip_folder(folder: Path, prefix: str = "") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + str(path.relative_to(folder)))
    buffer.seek(0)
    buffer.name = f"{folder.name}.zip"
    return buffer


def zip_entries(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    buffer.seek(0)
    buffer.name = "upload.zip"
    return buffer


def upload(client, project_id: int, archive, **fields):
    data = {"archive": archive, **fields}
    return client.post(f"/api/projects/{project_id}/datasets/", data, format="multipart")


def wait_job(job_id: int, worker=None, timeout: float = 240) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, state__in=Job.FINISHED_STATES).first(), timeout=timeout,
                    message=f"job {job_id}" + (f"\n{worker.log()}" if worker else ""))


def upload_and_wait(client, project_id: int, archive, worker=None, **fields) -> Job:
    response = upload(client, project_id, archive, **fields)
    assert response.status_code == 202, response.content
    return wait_job(response.json()["id"], worker)


def project_files(project_id: int) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "projects" / str(project_id)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def staging_leftovers(job: Job) -> bool:
    return (Path(settings.MEDIA_ROOT) / job.params["staging"]).exists()


def media_files() -> set[Path]:
    root = Path(settings.MEDIA_ROOT)
    return {p for p in root.rglob("*") if p.is_file()}


def infer_upload(image, instance_map, stem: str) -> dict:
    """The multipart body of an inference request: ``image`` as ``<stem>.png``, its mask as ``<stem>.npy``."""
    import numpy as np
    from PIL import Image as PILImage

    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(image).save(png, format="PNG")
    np.save(npy, instance_map)
    png.name, npy.name = f"{stem}.png", f"{stem}.npy"
    png.seek(0), npy.seek(0)
    return {"image": png, "mask": npy}
