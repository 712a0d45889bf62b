"""The upload handler that stops an upload once its files are over the route's limit (MAX_UPLOAD_BYTES), as they
arrive: the rest of the body is never read, and what was written of the files is removed.

Installed first in ``request.upload_handlers`` by :class:`webapp.core.middleware.UploadSizeMiddleware` on the
routes of its ``UPLOAD_LIMITS``, before anything reads the body (DRF's session authentication reads the form for
its CSRF check, the view's ``request.data`` otherwise: both parse with these handlers). See Django's "Upload
Handlers" (django.core.files.uploadhandler).
"""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from .domain_errors import TooLarge


class UploadLimitHandler(FileUploadHandler):
    """Counts the bytes of the request's files, all fields together, and stops the upload as soon as they are
    over ``limit`` (the setting ``setting``). Parsing the body then raises :class:`UploadTooLarge` (413, naming
    the field of the file that went over): a form cut short never reaches the view as if it were whole.

    Passes every chunk on to the handlers after it (memory or temporary file, Django's own), which store the
    files. When it stops the upload, Django closes (and so deletes) the file being written; the files that
    were complete before it are closed here."""

    def __init__(self, request, *, limit: int, setting: str, way_on: str):
        super().__init__(request)
        self.limit, self.setting, self.way_on = limit, setting, way_on
        self.received = 0
        self.refused: tuple[str, str] | None = None   # (field, file name) of the file that went over
        self._complete: list = []   # the other handlers' files, once complete

    def new_file(self, field_name, file_name, *args, **kwargs):
        self._keep_complete_files()
        super().new_file(field_name, file_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.refused = (self.field_name, self.file_name)
            # The rest of the body (at most the room for the other fields) is read and dropped after the answer
            # (webapp.core.middleware.DrainUnreadBodyMiddleware), so that the client, still sending, reads the 413.
            self.request.upload_stopped = True
            # Django stops parsing here (connection_reset: without it, it reads the rest to its end first).
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None   # the next handler gives the file

    def upload_complete(self):
        if self.refused is None:
            return None
        self._keep_complete_files()
        for file in self._complete:
            file.close()   # a temporary upload file is deleted as it is closed
        field, file_name = self.refused
        limit = f"{self.limit / 1e6:,.1f} MB" if self.limit >= 100_000 else f"{self.limit:,} bytes"
        raise UploadTooLarge(f"{file_name}: the files of this upload are over the limit of {limit} ({self.setting}), "
                             f"and it was refused as it arrived; {self.way_on}", field=field)

    def _keep_complete_files(self) -> None:
        # Before a new file starts here (this handler is first), the handlers after it still hold the last one.
        for handler in self.request.upload_handlers if self.request is not None else ():
            file = getattr(handler, "file", None)
            if handler is not self and file is not None and all(file is not kept for kept in self._complete):
                self._complete.append(file)


class UploadTooLarge(TooLarge):
    """An upload stopped by :class:`UploadLimitHandler` (413, naming the field)."""
