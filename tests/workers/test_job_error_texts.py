"""What a job's error says to the members of its project: the object storage's failures without the store's
address or storage keys (botocore's message names both), pointing at the worker's STORAGE_URL."""

from botocore.exceptions import ClientError, EndpointConnectionError

from workers.tasks import _error_text


def raised_from(cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except Exception as exc:
            raise OSError("could not fetch the file") from exc
    except OSError as wrapped:
        return wrapped


def test_a_store_out_of_reach_is_named_without_its_address_or_keys():
    unreachable = EndpointConnectionError(
        endpoint_url="http://127.0.0.1:9015/nucleus-media/projects/1/datasets/job-1/images/train_1.png")
    for exc in (unreachable, raised_from(unreachable)):
        text = _error_text(exc)
        assert text.startswith("The object storage could not be used (EndpointConnectionError;")
        assert "STORAGE_URL" in text and "9015" not in text and "projects/1" not in text and "nucleus-media" not in text


def test_a_refusal_of_the_store_too():
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied for bucket nucleus-media"}},
                         "GetObject")
    text = _error_text(denied)
    assert text.startswith("The object storage could not be used (ClientError;") and "nucleus-media" not in text


def test_other_errors_keep_their_message_and_frame():
    assert _error_text(raised_from(ValueError("x"))).startswith("OSError: could not fetch the file (at ")


def test_a_device_this_worker_lacks_is_said_without_a_code_location():
    """``"device": "cuda"`` on a CPU-only worker: the job said "ValueError: ... (at predict.py:40)"."""
    import pytest
    import torch

    from mlcore.predict import resolve_device
    from mlcore.types import DeviceUnavailable

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    try:
        resolve_device("cuda")
    except DeviceUnavailable as exc:
        text = _error_text(exc)
    assert text.startswith("device cuda requested but CUDA is not available on this machine: use \"auto\"")
    assert "(at " not in text
