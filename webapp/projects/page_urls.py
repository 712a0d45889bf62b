"""Pages of a project's team (server-rendered, plain forms)."""

from django.urls import path

from . import pages

urlpatterns = [
    path("projects/<int:project_id>/members/", pages.members, name="project-members"),
    path("projects/<int:project_id>/members/role/", pages.change_role, name="project-member-role"),
    path("projects/<int:project_id>/members/remove/", pages.remove_member, name="project-member-remove"),
]
