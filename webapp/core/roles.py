"""The roles a member can hold in a project, and their ranks. Here rather than next to the Membership model
so that webapp.core.policy, below webapp.projects, can name them (tests/test_layering_imports.py)."""

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"          # manages members, everything a curator does
    CURATOR = "curator", "Curator"    # uploads datasets, trains, settles conflicts
    REVIEWER = "reviewer", "Reviewer" # reviews nuclei
    VIEWER = "viewer", "Viewer"       # reads


# Each role can do everything the roles after it can.
ROLE_RANK = {Role.VIEWER: 0, Role.REVIEWER: 1, Role.CURATOR: 2, Role.ADMIN: 3}
