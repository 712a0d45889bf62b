from django.urls import path

from . import views

urlpatterns = [
    path("projects/<int:project_id>/versions/<int:number>/", views.version_detail, name="version-detail"),
]
