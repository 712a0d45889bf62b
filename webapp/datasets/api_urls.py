from rest_framework.routers import SimpleRouter

from .api import ProjectDatasetViewSet

# Under the project API's prefix and basename: /api/projects/<id>/datasets/ is api-project-datasets.
router = SimpleRouter()
router.register("projects", ProjectDatasetViewSet, basename="api-project")
urlpatterns = router.urls
