from django.conf import settings
from django.db import models

from webapp.core.roles import ROLE_RANK, Role  # noqa: F401  (here too: the models' own vocabulary)


class Project(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    # SLIDES_ROOT is one share for the whole server, often every lab's slides: a project registers slides by
    # path only from the folder a server administrator granted it (do_set_slides_folder), not from all of it.
    slides_folder = models.CharField(
        max_length=1024, blank=True, default="", db_default="",
        help_text="the folder under SLIDES_ROOT whose slides this project's curators may register by path: a path "
                  "relative to SLIDES_ROOT, '.' for all of it, empty for none (slides are then uploaded)")

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self):
        return f"{self.user} in {self.project} as {self.role}"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]
