from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.http import require_http_methods
from rest_framework.routers import DefaultRouter

from webapp.core import api as core_api
from webapp.core import api_docs
from webapp.core.passwords import LimitedPasswordResetView
from webapp.core import views as core_views
from webapp.jobs import pages as job_pages
from webapp.jobs.api import JobViewSet
from webapp.projects import pages as project_pages

FORM_METHODS = ["get", "head", "post", "options"]  # HEAD follows GET (webapp.core.policy)
PAGE_METHODS = ["get", "head", "options"]

router = DefaultRouter()
router.APIRootView = core_api.ApiRootView
router.register("jobs", JobViewSet, basename="api-job")

urlpatterns = [
    path("", project_pages.home, name="home"),
    path("account/", core_views.account, name="account"),
    path("favicon.ico", core_views.favicon, name="favicon"),
    path("account/token/", core_views.regenerate_token, name="regenerate-token"),
    path("account/token/revoke/", core_views.revoke_token, name="revoke-token"),
    path("account/email/", core_views.change_email, name="account-email"),
    path("jobs/<int:job_id>/", job_pages.job_detail, name="job-detail"),
    # GET shows the form, POST signs in (LoginView would also take PUT as a POST).
    path("login/", auth_views.LoginView.as_view(http_method_names=FORM_METHODS), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Passwords (Django's views and names; the templates are in templates/registration/). Their forms
    # answer GET and POST only: a FormView would also take PUT as a POST.
    path("password-reset/", LimitedPasswordResetView.as_view(
        http_method_names=FORM_METHODS, email_template_name="registration/password_reset_email.txt"),
        name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(http_method_names=PAGE_METHODS),
         name="password_reset_done"),
    # Its dispatch answers a bad link itself, before the method check: refuse other methods before it.
    path("password-reset/<uidb64>/<token>/",
         require_http_methods(["GET", "HEAD", "POST"])(auth_views.PasswordResetConfirmView.as_view()),
         name="password_reset_confirm"),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(http_method_names=PAGE_METHODS),
         name="password_reset_complete"),
    path("account/password/", auth_views.PasswordChangeView.as_view(http_method_names=FORM_METHODS),
         name="password_change"),
    path("account/password/done/", auth_views.PasswordChangeDoneView.as_view(http_method_names=PAGE_METHODS),
         name="password_change_done"),
    path("admin/", admin.site.urls),
    path("api/health/", core_api.health_view, name="api-health"),
    path("api/schema/", api_docs.SchemaView.as_view(), name="api-schema"),
    path("api/docs/", api_docs.swagger, name="api-docs"),
    path("api/redoc/", api_docs.redoc, name="api-redoc"),
    path("api/", include(router.urls)),
    path("api/", include("webapp.projects.api_urls")),
    path("api/", include("webapp.datasets.api_urls")),  # a project's datasets, beside the project API
    path("api/", include("webapp.training.api_urls")),
    path("api/", include("webapp.datasets.viewer_api_urls")),
    path("", include("webapp.datasets.page_urls")),
    path("", include("webapp.projects.page_urls")),
    path("api/", include("webapp.review.api_urls")),
    path("", include("webapp.review.page_urls")),
    path("", include("webapp.training.page_urls")),
]

# JSON with a "detail" under /api/, HTML pages elsewhere (webapp.core.errors).
handler400 = "webapp.core.errors.bad_request"
handler403 = "webapp.core.errors.permission_denied"
handler404 = "webapp.core.errors.page_not_found"
handler500 = "webapp.core.errors.server_error"
