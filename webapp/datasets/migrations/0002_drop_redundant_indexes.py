"""Drop the single-column foreign-key indexes that a composite index already starts with, and index
Label.previous only where it is set.

Every nucleus, label and current label that an import inserts paid for these indexes; the queries use the
composite ones (nucleus: instance_once_per_image; label: label_history_idx, label_source_time_idx; current
label: one_current_label, current_by_class_idx). The indexes are dropped by name with SQL, without
Django's AlterField, which would also drop and re-add (and so re-validate) each foreign key.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# (index, table, column): the names Django gave them in 0001 (the same on PostgreSQL and SQLite)
DROPPED = [
    ("datasets_nucleus_image_id_a36566bc", "datasets_nucleus", "image_id"),
    ("datasets_label_nucleus_id_e4363230", "datasets_label", "nucleus_id"),
    ("datasets_label_label_set_id_a9843248", "datasets_label", "label_set_id"),
    ("datasets_label_previous_id_c59ff4a6", "datasets_label", "previous_id"),
    ("datasets_currentlabel_nucleus_id_6741b3a7", "datasets_currentlabel", "nucleus_id"),
    ("datasets_currentlabel_label_set_id_291f36f3", "datasets_currentlabel", "label_set_id"),
]


class Migration(migrations.Migration):

    dependencies = [
        ('datasets', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(
                [f'DROP INDEX IF EXISTS "{index}"' for index, _, _ in DROPPED],
                reverse_sql=[f'CREATE INDEX "{index}" ON "{table}" ("{column}")' for index, table, column in DROPPED],
            )],
            state_operations=[
                migrations.AlterField(
                    model_name='currentlabel',
                    name='label_set',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='datasets.labelset'),
                ),
                migrations.AlterField(
                    model_name='currentlabel',
                    name='nucleus',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='current_labels', to='datasets.nucleus'),
                ),
                migrations.AlterField(
                    model_name='label',
                    name='label_set',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='datasets.labelset'),
                ),
                migrations.AlterField(
                    model_name='label',
                    name='nucleus',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='labels', to='datasets.nucleus'),
                ),
                migrations.AlterField(
                    model_name='label',
                    name='previous',
                    field=models.ForeignKey(blank=True, db_index=False, help_text='the label this one replaced (from what to what)', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='datasets.label'),
                ),
                migrations.AlterField(
                    model_name='nucleus',
                    name='image',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='nuclei', to='datasets.image'),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name='label',
            index=models.Index(condition=models.Q(('previous__isnull', False)), fields=['previous'], name='label_previous_idx'),
        ),
    ]
