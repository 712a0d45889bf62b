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


def cuda_devices() -> int:
    """CUDA devices PyTorch sees, asked in a short-lived process: asking here would initialise CUDA in the
    worker's main process, and the pool's forked children then could not use it ("Cannot re-initialize
    CUDA in forked subprocess")."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count() "
                            "if torch.cuda.is_available() else 0)"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        logger.warning("could not ask PyTorch for CUDA devices: %s", probe.stderr[-500:])
        return 0
    return int(probe.stdout.strip().splitlines()[-1])


@signals.celeryd_after_setup.connect
def refuse_gpu_queue_without_cuda(sender, instance, conf, **kwargs):
    """At worker start, after its queues are known (-Q): stop when it would take GPU jobs without CUDA."""
    from django.conf import settings

    queues = set(instance.app.amqp.queues.consume_from or {})
    if GPU_QUEUE not in queues or settings.ALLOW_CPU_GPU_QUEUE:
        return
    devices = cuda_devices()
    refusal = gpu_queue_refusal(queues, cuda_available=devices > 0, allow_cpu=False)
    if refusal:
        # SystemExit, not an exception: Celery logs and swallows exceptions raised by signal receivers.
        raise SystemExit(refusal)
    concurrency = getattr(instance, "concurrency", 1) or 1
    if concurrency > devices:
        logger.warning("worker %s consumes '%s' with concurrency %s on %s GPU(s): trainings will share a "
                       "GPU; run one process per GPU (--concurrency 1 on a one-GPU host)", sender, GPU_QUEUE,
                       concurrency, devices)
