"""The ``gpu`` queue is consumed only by workers that have CUDA (workers/celery.py), unless
ALLOW_CPU_GPU_QUEUE says a CPU machine takes it on purpose (run.py's single worker, the test suite's)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, die_with_parent, subprocess_env
from workers.celery import gpu_queue_refusal


def test_refusal_rules():
    assert gpu_queue_refusal({"default"}, cuda_available=False, allow_cpu=False) is None
    assert gpu_queue_refusal({"gpu"}, cuda_available=True, allow_cpu=False) is None
    assert gpu_queue_refusal({"default", "gpu"}, cuda_available=False, allow_cpu=True) is None
    refusal = gpu_queue_refusal({"gpu"}, cuda_available=False, allow_cpu=False)
    assert "'gpu' queue" in refusal and "ALLOW_CPU_GPU_QUEUE=1" in refusal


def _start_worker(queues: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "--concurrency", "1",
         "-l", "info", "-n", "gpu-check@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, preexec_fn=die_with_parent)


@pytest.mark.slow  # starts a worker process
@pytest.mark.django_db
def test_a_worker_on_the_gpu_queue_without_cuda_refuses_to_start():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the worker would start")
    env = subprocess_env()
    env.pop("ALLOW_CPU_GPU_QUEUE", None)
    result = _start_worker("gpu", **env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "consumes the 'gpu' queue but PyTorch sees no CUDA device" in output, output[-3000:]
    assert "ready." not in output  # it never began consuming
