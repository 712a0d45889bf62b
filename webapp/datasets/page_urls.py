"""Pages for browsing datasets and images (server-rendered)."""

from django.urls import path

from . import views

urlpatterns = [
    path("projects/<int:project_id>/datasets/<int:dataset_id>/", views.dataset_detail, name="dataset-detail"),
    path("projects/<int:project_id>/datasets/<int:dataset_id>/edit/", views.edit_dataset, name="dataset-edit"),
    path("projects/<int:project_id>/datasets/<int:dataset_id>/delete/", views.delete_dataset, name="dataset-delete"),
    path("projects/<int:project_id>/images/<int:image_id>/", views.image_viewer, name="image-viewer"),
    path("images/<int:image_id>/slide/", views.slide_viewer, name="slide-viewer"),
    path("media-files/images/<int:image_id>/<str:kind>", views.image_file, name="image-file"),
]
