"""The REST API's body parsers (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]).

Its own module: DRF imports parser classes while `rest_framework.views` is still loading, so this module must
not import views (mobilityplus.api_errors does).
"""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; a body nested too deeply for Python's decoder is a parse error (400), not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
