from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "webapp.review"
    label = "review"
    verbose_name = "Review (active learning)"

    def ready(self):
        from webapp.datasets import taken_back
        from webapp.projects.operations import MEMBER_LEFT_HOOKS

        from .operations import do_release_member, taken_back_labels

        if do_release_member not in MEMBER_LEFT_HOOKS:
            MEMBER_LEFT_HOOKS.append(do_release_member)
        # A training reads the labels as of its data snapshot: an undo that left no label is known only here.
        taken_back.register(taken_back_labels)
