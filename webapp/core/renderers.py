"""DRF's browsable API under the site's CSP.

Its template floats two buttons (the *Extra Actions* menu and *Filters*) with one inline style attribute,
which the policy's ``style-src 'self'`` blocks. Only that exact attribute is allowed, by its hash, and only
on the browsable API's own pages: no other inline style and no script is let in. The ``<style>`` element DRF
adds for Pygments (code in Markdown view descriptions, which this API does not have) is left out.
"""

import base64
import hashlib

from rest_framework.renderers import BrowsableAPIRenderer

# The one inline style of rest_framework/base.html (DRF 3.16), as it is written there.
DRF_BUTTON_STYLE = "float: right; margin-right: 10px"


def style_attribute_source(style: str) -> str:
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    return f"'sha256-{digest}'"


class PolicyBrowsableAPIRenderer(BrowsableAPIRenderer):
    def get_context(self, data, accepted_media_type, renderer_context):
        context = super().get_context(data, accepted_media_type, renderer_context)
        context["code_style"] = None
        return context

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            # django-csp reads this when the response leaves (the middleware runs after rendering).
            response._csp_update = {"style-src-attr": ["'unsafe-hashes'", style_attribute_source(DRF_BUTTON_STYLE)]}
        return super().render(data, accepted_media_type, renderer_context)
