"""A body no view read is read to its end after the response, so that the client's kept-alive connection stays
usable: gunicorn drains only 64 KiB itself and then closes a connection its response promised to keep open."""

from django.http import HttpResponse
from django.test import RequestFactory

from webapp.core import middleware
from webapp.core.middleware import DrainUnreadBodyMiddleware


def refusing(request):
    return HttpResponse(status=403)   # as a view refusing an upload before parsing it


def test_an_unread_body_is_drained_after_the_response():
    request = RequestFactory().post("/api/projects/1/datasets/", data=b"x" * 300_000,
                                    content_type="application/octet-stream")
    response = DrainUnreadBodyMiddleware(refusing)(request)
    assert response.status_code == 403
    assert request._stream._pos == request._stream.limit == 300_000 and request._stream.read() == b""


def test_a_read_body_or_one_over_the_limit_is_left_alone(monkeypatch):
    def reading(request):
        request.body   # the view read it
        return HttpResponse()

    read = RequestFactory().post("/x/", data=b"y" * 1000, content_type="application/octet-stream")
    assert DrainUnreadBodyMiddleware(reading)(read).status_code == 200
    monkeypatch.setattr(middleware, "DRAIN_LIMIT", 1000)
    huge = RequestFactory().post("/x/", data=b"z" * 5000, content_type="application/octet-stream")
    DrainUnreadBodyMiddleware(refusing)(huge)
    assert huge._stream._pos == 0   # too large to read for nothing: gunicorn closes that connection
