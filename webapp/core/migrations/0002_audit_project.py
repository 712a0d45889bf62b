"""The audit log's project column, for a project's activity page, filled for the rows written before it.

Rows name their target as "app.model:pk"; the project is the target itself or the project of the dataset,
job, model version or nucleus named, where that row still exists (a deleted one's project is unknown, and
its rows stay out of every activity page). One UPDATE per kind of target, in SQL both PostgreSQL and
SQLite run, so that a long log is filled without loading it into Python."""

from django.conf import settings
from django.db import migrations, models

# (target prefix, SQL giving the project's id from the target's id in ``:id``)
TARGETS = [
    ("projects.project", ":id"),
    ("datasets.dataset", "SELECT project_id FROM {datasets_dataset} WHERE id = :id"),
    ("jobs.job", "SELECT project_id FROM {jobs_job} WHERE id = :id"),
    ("training.modelversion", "SELECT project_id FROM {training_modelversion} WHERE id = :id"),
    ("datasets.nucleus", "SELECT i.project_id FROM {datasets_nucleus} n JOIN {datasets_image} i ON i.id = n.image_id "
                         "WHERE n.id = :id"),
]
MODELS = {"datasets_dataset": ("datasets", "Dataset"), "jobs_job": ("jobs", "Job"),
          "training_modelversion": ("training", "ModelVersion"), "datasets_nucleus": ("datasets", "Nucleus"),
          "datasets_image": ("datasets", "Image")}


def fill_project_ids(apps, schema_editor):
    quote = schema_editor.connection.ops.quote_name
    tables = {key: quote(apps.get_model(*model)._meta.db_table) for key, model in MODELS.items()}
    audit = quote(apps.get_model("core", "AuditLogEntry")._meta.db_table)
    with schema_editor.connection.cursor() as cursor:
        for prefix, source in TARGETS:
            start = len(prefix) + 2   # SUBSTR counts from 1, past "prefix:"
            target_id = f"CAST(SUBSTR(target, {start}) AS BIGINT)"
            value = source.replace(":id", target_id).format(**tables)
            cursor.execute(f"UPDATE {audit} SET project_id = ({value}) "
                           f"WHERE project_id IS NULL AND target LIKE %s", [f"{prefix}:%"])


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('datasets', '0004_media_storage_help_texts'),
        ('jobs', '0003_job_kind_delete'),
        ('training', '0005_retrain_policy_activate_only_if_not_lower'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='auditlogentry',
            name='project_id',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='auditlogentry',
            index=models.Index(fields=['project_id', '-id'], name='audit_by_project'),
        ),
        migrations.RunPython(fill_project_ids, migrations.RunPython.noop),
    ]
