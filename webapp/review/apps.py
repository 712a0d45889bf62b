from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "webapp.review"
    label = "review"
    verbose_name = "Review (active learning)"

    def ready(self):
        from webapp.projects.operations import MEMBER_LEFT_HOOKS

        from .operations import do_release_member

        if do_release_member not in MEMBER_LEFT_HOOKS:
            MEMBER_LEFT_HOOKS.append(do_release_member)
