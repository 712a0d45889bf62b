from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"
    verbose_name = "Core"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save, pre_save

        from .operations import note_a_password_change, revoke_token_after_a_password_change

        # A new password ends the API token (webapp.core.operations.do_revoke_api_token).
        pre_save.connect(note_a_password_change, sender=get_user_model(), dispatch_uid="note-a-password-change")
        post_save.connect(revoke_token_after_a_password_change, sender=get_user_model(),
                          dispatch_uid="revoke-token-after-a-password-change")
