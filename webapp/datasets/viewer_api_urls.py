"""API endpoints behind the pages: per-image nuclei outlines, exports."""

from django.urls import path

from . import slide_view_api, slides_api, viewer_api

urlpatterns = [
    path("images/<int:image_id>/nuclei/", viewer_api.ImageNucleiView.as_view(), name="api-image-nuclei"),
    # Whole-slide images: Deep Zoom as OpenSeadragon asks for it (<name>.dzi, then <name>_files/...).
    path("images/<int:image_id>/slide.dzi", slide_view_api.SlideDziView.as_view(), name="api-slide-dzi"),
    path("images/<int:image_id>/slide_files/<int:level>/<int:col>_<int:row>.jpeg", slide_view_api.SlideTileView.as_view(),
         name="api-slide-tile"),
    path("images/<int:image_id>/density/", slide_view_api.ImageDensityView.as_view(), name="api-image-density"),
    path("images/<int:image_id>/export.geojson", viewer_api.ImageGeoJsonView.as_view(), name="api-image-geojson"),
    # The label set is a query parameter, never a path segment: a name may hold "/" or anything else.
    path("images/<int:image_id>/export/types.npy", viewer_api.ImageTypesNpyView.as_view(),
         name="api-image-types-npy"),
    path("projects/<int:project_id>/export/merged.csv", viewer_api.MergedCsvView.as_view(), name="api-merged-csv"),
    path("datasets/<int:dataset_id>/export/detections.geojson", viewer_api.DatasetGeoJsonView.as_view(),
         name="api-dataset-geojson"),
    path("projects/<int:project_id>/export/detections.geojson", viewer_api.ProjectGeoJsonView.as_view(),
         name="api-project-geojson"),
    path("formats/<str:dataset_format>/example.zip", viewer_api.FormatExampleView.as_view(),
         name="api-format-example"),
    # Whole-slide images (issue 17)
    path("projects/<int:project_id>/slides/", slides_api.SlideRegisterView.as_view(), name="api-project-slides"),
    path("projects/<int:project_id>/slide-uploads/", slides_api.SlideUploadStartView.as_view(),
         name="api-slide-uploads"),
    path("projects/<int:project_id>/slide-uploads/<str:upload_id>/", slides_api.SlideUploadView.as_view(),
         name="api-slide-upload"),
    path("projects/<int:project_id>/slides/<int:image_id>/export/detections.geojson",
         slides_api.SlideGeoJsonView.as_view(), name="api-slide-geojson"),
    path("projects/<int:project_id>/slides/<int:image_id>/export/merged.csv", slides_api.SlideCsvView.as_view(),
         name="api-slide-csv"),
    path("datasets/<int:dataset_id>/export/coco.zip", viewer_api.DatasetCocoZipView.as_view(),
         name="api-dataset-coco"),
]
