"""Password reset requests, limited so that the form cannot be used to flood someone's inbox.

At most PASSWORD_RESET_LIMIT mails an hour go to one e-mail address, and one requesting address may ask
ADDRESS_FACTOR times as often (a lab behind one router resets several accounts). Past the limit for an address the form says so (429); past the limit for an e-mail address
the answer looks as usual and nothing is sent, so the form still tells nobody which addresses have an
account (Django's reset view is built that way).
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpResponseRedirect

from .authentication import client_ip, count_in_window

log = logging.getLogger(__name__)
WINDOW_SECONDS = 3600
WHAT = "password reset request"  # for the log, when the cache is unreachable
ADDRESS_FACTOR = 4


def address_key(address: str | None) -> str:
    return f"password-reset:ip:{address or 'unknown'}"


def email_key(email: str) -> str:
    return "password-reset:email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


class LimitedPasswordResetView(auth_views.PasswordResetView):
    def form_valid(self, form):
        limit = settings.PASSWORD_RESET_LIMIT
        if count_in_window(address_key(client_ip(self.request)), WINDOW_SECONDS, WHAT) > ADDRESS_FACTOR * limit:
            form.add_error(None, "Too many password reset requests from your address; try again in an hour, "
                                 "or ask an administrator.")
            response = self.form_invalid(form)
            response.status_code = 429
            return response
        if count_in_window(email_key(form.cleaned_data["email"]), WINDOW_SECONDS, WHAT) > limit:
            log.warning("password reset for one e-mail address asked more than %d times an hour: not sent", limit)
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)
