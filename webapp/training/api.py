"""Training, model versions, retraining policy and single-image inference, per project."""

from __future__ import annotations

import mimetypes
import re
import shutil
import uuid
from pathlib import Path

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import parser_classes
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from mlcore.types import DataError, file_part
from webapp.core import media
from webapp.core.api_errors import Conflict
from webapp.core.api_views import api_view
from webapp.core.filenames import safe_file_name
from webapp.core.policy import project_role
from webapp.datasets.slides_api import slide_of
from webapp.jobs import operations as job_operations
from webapp.jobs.access import job_for
from webapp.jobs.models import Job
from webapp.jobs.serializers import JobAcceptedSerializer, job_accepted
from webapp.projects.access import get_project_for

from . import operations
from .models import RetrainPolicy
from .queries import active_version, version_of
from .serializers import (ActivatedVersionSerializer, InferRequestSerializer, ModelVersionSerializer,
                          RetrainPolicySerializer, SlideInferRequestSerializer, TrainEstimateSerializer,
                          TrainStartSerializer)




def _training_job(project, job_id: int) -> Job:
    job = Job.objects.filter(pk=job_id, project=project, kind=Job.Kind.TRAIN).first()
    if job is None:
        raise NotFound(f"job {job_id} is not a training of this project")
    return job


@extend_schema(request=TrainStartSerializer, responses={202: JobAcceptedSerializer})
@api_view(["POST"])
def train(request, project_id: int):
    """Start training (curators): 202 with the job; 409 when the project is already training, while an import
    into it is queued or running (a training reads the datasets as it starts), or without a labelled dataset.

    Epochs and draws per epoch left out follow the project's default schedule (see .../train/estimate/).
    ``resume_from``: resume a cancelled or failed training after the last stage it finished."""
    project = get_project_for(request.user, project_id, project_role(request))
    payload = TrainStartSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    options = dict(payload.validated_data)
    resume_from = options.pop("resume_from", None)
    job = operations.do_start_training(project, actor=request.user, options=options,
                                       resume_from=_training_job(project, resume_from) if resume_from else None)
    return job_accepted(job, request)


@extend_schema(parameters=[TrainEstimateSerializer], responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"], query_parameters=list(TrainEstimateSerializer().fields))
def train_estimate(request, project_id: int):
    """How long a training with these options would take (curators): the project's size, the default
    schedule and its rule, the speed used and where it comes from, seconds per stage and in total."""
    from .estimate import training_estimate

    project = get_project_for(request.user, project_id, project_role(request))
    payload = TrainEstimateSerializer(data=request.query_params)
    payload.is_valid(raise_exception=True)
    options = dict(payload.validated_data)
    resume_from = options.pop("resume_from", None)
    point = None
    if resume_from:
        job = _training_job(project, resume_from)
        point = operations.resume_point(job, project)
        options = {**(job.params or {}).get("options", {}), "stages": point["remaining"]}
    return Response(training_estimate(project, options, resume_point=point))


@extend_schema(responses=ModelVersionSerializer(many=True))
@api_view(["GET"])
def versions(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    return Response(ModelVersionSerializer(project.model_versions.order_by("number"), many=True,
                                            context={"request": request}).data)


@extend_schema(request=None, responses=ActivatedVersionSerializer)
@api_view(["POST"])
def activate(request, project_id: int, number: int):
    """Make this version the active one (rollback), curators only. ``prediction_jobs``: the ids of the jobs it
    queued to classify the datasets imported since it last predicted (none where it has them all)."""
    project = get_project_for(request.user, project_id, project_role(request))
    version = operations.do_activate_version(version_of(project, number), actor=request.user)
    return Response(ActivatedVersionSerializer(version, context={"request": request}).data)


@extend_schema(responses={(200, "application/octet-stream"): bytes})
@api_view(["GET"])
def checkpoint(request, project_id: int, number: int):
    project = get_project_for(request.user, project_id, project_role(request))
    version = version_of(project, number)
    if not media.exists(version.checkpoint_file):
        raise NotFound(f"the checkpoint file of version {number} is missing on the server; "
                       "train again or activate another version")
    return media.download_response(version.checkpoint_file, filename=f"{safe_file_name(project.name, 'model')}-v{number}.pt",
                                   content_type="application/octet-stream")  # not guessed from ".pt"


@extend_schema(request=RetrainPolicySerializer, responses=RetrainPolicySerializer)
@api_view(["GET", "PUT", "PATCH"])
def retrain_policy(request, project_id: int):
    """GET the policy; PUT (curators) replaces it and its django-celery-beat schedules, a field left out taking
    its default (enabled true, no threshold, checks every 15 minutes, no cron, default options, the guard off);
    PATCH changes only the fields it gives."""
    if request.method in SAFE_METHODS:
        project = get_project_for(request.user, project_id, project_role(request))
        policy = RetrainPolicy.objects.filter(project=project).first() or RetrainPolicy(project=project)
        return Response(RetrainPolicySerializer(policy).data)
    project = get_project_for(request.user, project_id, project_role(request))
    payload = RetrainPolicySerializer(data=request.data, partial=request.method == "PATCH")
    payload.is_valid(raise_exception=True)
    # A schedule celery refuses is Invalid on "cron": a 400 (webapp.core.api_errors).
    change = operations.do_change_retrain_policy if request.method == "PATCH" else operations.do_set_retrain_policy
    policy = change(project, actor=request.user, **payload.validated_data)
    return Response(RetrainPolicySerializer(policy).data)


@extend_schema(request=InferRequestSerializer, responses={202: JobAcceptedSerializer})
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def infer(request, project_id: int):
    """Classify the nuclei of a new image with the active model (members who may review or more)."""
    project = get_project_for(request.user, project_id, project_role(request))
    version = active_version(project)
    if version is None:
        raise Conflict("The project has no trained model yet: train one first.", code="no_model")
    upload = InferRequestSerializer(data=request.data)
    upload.is_valid(raise_exception=True)
    name = f"projects/{project.pk}/inference/{uuid.uuid4().hex}"
    folder = media.work_path(name)
    folder.mkdir(parents=True)
    try:
        job = _stage_and_enqueue_inference(request, project, version, upload, name)
    except BaseException:
        media.delete(name)  # refused (Redis down, a bad file): nothing is kept, here or in the storage
        raise
    if media.is_remote():
        shutil.rmtree(folder, ignore_errors=True)  # the worker reads the upload from the storage
    return job_accepted(job, request)


class SlideInferView(APIView):
    """Classify every nucleus of a slide with the active model (curators): 202 with the job, which stores
    one prediction per nucleus and label set, as the project's prediction job does."""

    @extend_schema(operation_id="slide_infer", tags=["slides"], request=SlideInferRequestSerializer,
                   responses={202: JobAcceptedSerializer})
    def post(self, request, project_id: int, image_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        image = slide_of(project, image_id)
        body = SlideInferRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = active_version(project)
        if version is None:
            raise Conflict("The project has no trained model yet: train one first.", code="no_model")
        return job_accepted(operations.do_start_slide_prediction(version, image, actor=request.user,
                                                              tta=body.validated_data["tta"]), request)


def _stage_and_enqueue_inference(request, project, version, upload, name: str) -> Job:
    folder = media.work_path(name)
    names = {}
    # The user's file names become our file names only where they are plain ones (no separator, "..",
    # control character, or over 64 characters): no name can break a path.
    image_stem = file_part(Path(upload.validated_data["image"].name).stem, "image")
    for field in ("image", "mask"):
        uploaded = upload.validated_data[field]
        suffix = Path(uploaded.name).suffix.lower()
        if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
            suffix = ".npy" if field == "mask" else ".png"
        stem = image_stem if field == "image" else f"{image_stem}-mask"
        names[field] = f"{stem}{suffix}"
        with open(folder / names[field], "wb") as sink:
            for chunk in uploaded.chunks():
                sink.write(chunk)
    # The names the user's files had, so that an error about one names it as they know it (run_inference).
    uploaded = {field: Path(upload.validated_data[field].name).name[:200] for field in ("image", "mask")}
    _refuse_what_the_job_would(folder, names, uploaded)
    media.publish(name)  # in the storage before the job that reads it is queued
    return job_operations.do_enqueue_job(Job.Kind.INFER, actor=request.user, project=project, params={
        "model_version": version.pk, "folder": name, "tta": upload.validated_data["tta"], "uploaded": uploaded,
        **names})


def _refuse_what_the_job_would(folder: Path, names: dict, uploaded: dict) -> None:
    """What the job would fail on at once is the request's 400, naming the user's file: an image nothing can read,
    a mask in a lossy format or that looks like a photograph, a mask of another size (the image's header only;
    the mask is read whole, as the job reads it)."""
    from mlcore.infer import read_mask
    from mlcore.readers._common import image_size

    field = "image"
    try:
        shape = image_size(folder / names["image"])
        field = "mask"
        read_mask(folder / names["mask"], shape)
    except DataError as exc:
        raise ValidationError({field: f"{uploaded[field]}: {exc.problem}"}) from None


@extend_schema(responses={(200, "application/octet-stream"): bytes, (200, "image/png"): bytes,
                          (200, "application/json"): OpenApiTypes.OBJECT})
@api_view(["GET"])
def job_file(request, job_id: int, name: str):
    """A file an inference job wrote (npy per label set, overlay PNG, JSON)."""
    job = job_for(request.user, job_id)
    for relative in job.result.get("files", []):
        if Path(relative).name == name:
            if not media.exists(relative):
                raise NotFound(f"the file {name!r} of job {job_id} is gone from the server")
            return media.download_response(relative, as_attachment=not name.endswith(".png"), filename=name,
                                           content_type=mimetypes.guess_type(name)[0])
    raise NotFound(f"job {job_id} wrote no file named {name!r}")
