"""Review API: the queue, decisions, undo, skip, gallery, progress, agreement and crops."""

from django.urls import path

from . import api

urlpatterns = [
    path("projects/<int:project_id>/review/next/", api.next_item, name="api-review-next"),
    path("projects/<int:project_id>/review/progress/", api.progress, name="api-review-progress"),
    path("projects/<int:project_id>/review/undo/", api.undo_last, name="api-review-undo-last"),
    path("projects/<int:project_id>/review/gallery/", api.gallery, name="api-review-gallery"),
    path("projects/<int:project_id>/review/bulk/", api.bulk, name="api-review-bulk"),
    path("projects/<int:project_id>/review/agreement/", api.agreement, name="api-review-agreement"),
    path("projects/<int:project_id>/review/conflicts/settle/", api.settle, name="api-review-settle"),
    path("nuclei/<int:nucleus_id>/labels/", api.nucleus_labels, name="api-nucleus-labels"),
    path("nuclei/<int:nucleus_id>/labels/undo/", api.undo_nucleus, name="api-nucleus-undo"),
    path("nuclei/<int:nucleus_id>/skip/", api.skip, name="api-nucleus-skip"),
    path("nuclei/<int:nucleus_id>/release/", api.release, name="api-nucleus-release"),
    path("review/keys/", api.keys, name="api-review-keys"),
    path("images/<int:image_id>/region.png", api.image_region, name="api-image-region"),
]
