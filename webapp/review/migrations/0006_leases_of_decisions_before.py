from django.db import migrations
from django.utils import timezone


def decisions_stay_decided(apps, schema_editor):
    """A nucleus whose current label is a reviewer's decision has a decided lease row: the gate that keeps a
    second reviewer from deciding it again without asking for a second opinion. Rows were missing where the
    account that decided was deleted before 0005 (its rows went with it) and for decisions made before 0002.
    One INSERT ... SELECT: no row passes through Python (a project holds up to millions of labels)."""
    CurrentLabel = apps.get_model("datasets", "CurrentLabel")
    ReviewLease = apps.get_model("review", "ReviewLease")
    labels, leases = CurrentLabel._meta.db_table, ReviewLease._meta.db_table
    now = timezone.now()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {leases} (nucleus_id, label_set_id, user_id, expires_at, claimed_at, decided) "
            f"SELECT c.nucleus_id, c.label_set_id, NULL, %s, %s, %s FROM {labels} c "
            f"WHERE c.source = %s AND NOT EXISTS (SELECT 1 FROM {leases} l "
            f"WHERE l.nucleus_id = c.nucleus_id AND l.label_set_id = c.label_set_id)",
            [now, now, True, "review"])


class Migration(migrations.Migration):

    dependencies = [
        ("review", "0005_lease_user_kept_null"),
        ("datasets", "0006_dataset_split_key"),
    ]

    operations = [
        migrations.RunPython(decisions_stay_decided, migrations.RunPython.noop),
    ]
