from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_POST, require_safe
from rest_framework.authtoken.models import Token

from . import operations
from .domain_errors import Invalid


@require_safe
def account(request):
    return _account_page(request)


def _account_page(request, email_form: dict | None = None):
    token = Token.objects.filter(user=request.user).first()
    email_form = email_form or {"email": request.user.email, "error": "", "field": ""}
    return render(request, "core/account.html", {"token": token, "email_form": email_form})


@require_POST
def change_email(request):
    """Set one's own e-mail address (with the current password); a mistake comes back beside its field."""
    email = request.POST.get("email", "")[:254]
    try:
        changed = operations.do_set_email(request.user, email, password=request.POST.get("password", ""))
    except Invalid as exc:
        return _account_page(request, {"email": email, "error": exc.detail, "field": exc.field})
    if not changed:
        messages.info(request, "That is your e-mail address already: nothing changed.")
    elif request.user.email:
        messages.success(request, f"Your e-mail address is now {request.user.email}.")
    else:
        messages.success(request, "Your e-mail address was removed: a forgotten password is reset by a staff member.")
    return redirect("account")


@require_POST
def regenerate_token(request):
    had_one = Token.objects.filter(user=request.user).exists()
    operations.do_regenerate_api_token(request.user)
    messages.success(request, "A new API token was created; the previous one no longer works." if had_one
                     else "Your API token was created: send it in the Authorization header (below).")
    return redirect("account")


@require_POST
def revoke_token(request):
    """End the user's API token without a new one (a token copied where it should not be, a script retired)."""
    if operations.do_revoke_api_token(request.user, reason="revoked on the account page"):
        messages.success(request, "Your API token was revoked: requests with it are refused from now on. "
                                  "Create a new one here when a script needs it again.")
    else:
        messages.info(request, "You have no API token, so there was nothing to revoke.")
    return redirect("account")


@require_safe
def favicon(request):
    """/favicon.ico, which browsers ask for on pages that name no icon (the API's documentation pages):
    the site's icon, from the static files."""
    return redirect(static("favicon.svg"), permanent=True)


__all__ = ["account", "regenerate_token", "revoke_token", "favicon", "login_required"]
