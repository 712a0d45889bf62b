from django.urls import path

from . import api

urlpatterns = [
    path("projects/<int:project_id>/train/", api.train, name="api-train"),
    path("projects/<int:project_id>/train/estimate/", api.train_estimate, name="api-train-estimate"),
    path("projects/<int:project_id>/versions/", api.versions, name="api-versions"),
    path("projects/<int:project_id>/versions/<int:number>/activate/", api.activate, name="api-version-activate"),
    path("projects/<int:project_id>/versions/<int:number>/checkpoint/", api.checkpoint, name="api-version-checkpoint"),
    path("projects/<int:project_id>/retrain-policy/", api.retrain_policy, name="api-retrain-policy"),
    path("projects/<int:project_id>/infer/", api.infer, name="api-infer"),
    path("projects/<int:project_id>/slides/<int:image_id>/infer/", api.SlideInferView.as_view(),
         name="api-slide-infer"),
    path("jobs/<int:job_id>/files/<str:name>", api.job_file, name="api-job-file"),
]
