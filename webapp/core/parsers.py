"""The API's JSON parser: DRF's, except that a body nested too deeply to decode is the caller's 400.

Python's json module raises RecursionError on some ten thousand nested brackets, which DRF's parser does not
catch: a 500 with a traceback logged for a 200 KB body any logged-in user could send in a loop.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None

