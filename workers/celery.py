import logging
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
logger = logging.getLogger(__name__)

app = Celery("nucleus_merge")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    # A worker that died (OOM, kill -9, lost machine) leaves its job "running": find those. Cheap when
    # nothing is stale (one query), so often: a lost job ends within a minute.
    "reap-lost-jobs": {"task": "workers.tasks.reap_lost_jobs", "schedule": 15.0,
                       "options": {"expires": 14.0}},
    # What killed jobs left in the media folder (webapp.jobs.sweep).
    "sweep-orphan-files": {"task": "workers.tasks.sweep_orphan_files", "schedule": 600.0,
                           "options": {"expires": 590.0}},
}
app.autodiscover_tasks(["workers"])


GPU_QUEUE = "gpu"


def gpu_queue_refusal(queues, *, cuda_available: bool, allow_cpu: bool) -> str | None:
    """Why a worker consuming ``queues`` must not start, or None. Trainings, predictions and inferences
    are sent to the ``gpu`` queue for the workers that have CUDA; a CPU-only worker that took them from
    that queue would run them many times slower while the GPU hosts sat idle."""
    if GPU_QUEUE not in queues or cuda_available or allow_cpu:
        return None
    return (f"This worker consumes the '{GPU_QUEUE}' queue but PyTorch sees no CUDA device here "
            f"(torch.cuda.is_available() is False). Start it with -Q default on a machine without a GPU, "
            f"or set ALLOW_CPU_GPU_QUEUE=1 to run GPU jobs on the CPU on purpose (a single-machine setup).")


@signals.celeryd_after_setup.connect
def refuse_gpu_queue_without_cuda(sender, instance, conf, **kwargs):
    """At worker start, after its queues are known (-Q): stop when it would take GPU jobs without CUDA."""
    from django.conf import settings

    queues = set(instance.app.amqp.queues.consume_from or {})
    if GPU_QUEUE not in queues:
        return
    import torch

    cuda = torch.cuda.is_available()
    refusal = gpu_queue_refusal(queues, cuda_available=cuda, allow_cpu=settings.ALLOW_CPU_GPU_QUEUE)
    if refusal:
        # SystemExit, not an exception: Celery logs and swallows exceptions raised by signal receivers.
        raise SystemExit(refusal)
    concurrency = getattr(instance, "concurrency", 1) or 1
    if cuda and concurrency > torch.cuda.device_count():
        logger.warning("worker %s consumes '%s' with concurrency %s on %s GPU(s): trainings will share a "
                       "GPU; run one process per GPU (--concurrency 1 on a one-GPU host)", sender, GPU_QUEUE,
                       concurrency, torch.cuda.device_count())
