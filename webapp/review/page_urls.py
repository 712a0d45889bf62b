"""Review pages: the queue, the gallery, reviewer agreement, and a nucleus with its label history."""

from django.urls import path

from . import views

urlpatterns = [
    path("projects/<int:project_id>/review/", views.review_page, name="review-page"),
    path("projects/<int:project_id>/review/gallery/", views.gallery_page, name="review-gallery"),
    path("projects/<int:project_id>/review/agreement/", views.agreement_page, name="review-agreement"),
    path("projects/<int:project_id>/review/agreement/settle/", views.settle_form, name="review-settle"),
    path("account/review-keys/", views.keys_page, name="review-keys"),
    path("projects/<int:project_id>/nuclei/<int:nucleus_id>/", views.nucleus_page, name="nucleus-detail"),
]
