"""The audit log keeps its actor's username beside the key, so that a row still names who did it once their
account is deleted; rows written before take the name of an actor whose account still exists (one UPDATE, in SQL
both PostgreSQL and SQLite run). Rows whose actor was already deleted stay without a name."""

from django.conf import settings
from django.db import migrations, models


def fill_actor_names(apps, schema_editor):
    quote = schema_editor.connection.ops.quote_name
    audit = quote(apps.get_model("core", "AuditLogEntry")._meta.db_table)
    users = quote(apps.get_model(*settings.AUTH_USER_MODEL.split("."))._meta.db_table)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"UPDATE {audit} SET actor_name = (SELECT username FROM {users} WHERE id = {audit}.actor_id) "
                       f"WHERE actor_id IS NOT NULL")


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0002_audit_project'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='auditlogentry',
            name='actor_name',
            field=models.CharField(blank=True, db_default='', default='', max_length=150),
        ),
        migrations.RunPython(fill_actor_names, migrations.RunPython.noop),
    ]
