"""Pages of a project: its own page, its team and its deletion (server-rendered, plain forms)."""

from django.urls import path

from . import pages

urlpatterns = [
    path("projects/new/", pages.create_project, name="project-create"),
    path("projects/<int:project_id>/", pages.project_detail, name="project-detail"),
    path("projects/<int:project_id>/members/", pages.members, name="project-members"),
    path("projects/<int:project_id>/members/role/", pages.change_role, name="project-member-role"),
    path("projects/<int:project_id>/members/remove/", pages.remove_member, name="project-member-remove"),
    path("projects/<int:project_id>/leave/", pages.leave_project, name="project-leave"),
    path("projects/<int:project_id>/edit/", pages.edit_project, name="project-edit"),
    path("projects/<int:project_id>/activity/", pages.activity, name="project-activity"),
    path("projects/<int:project_id>/delete/", pages.delete_project, name="project-delete"),
]
