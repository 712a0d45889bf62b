from django.db import migrations, models


def keep_registering_where_they_did(apps, schema_editor):
    """Projects that registered slides by path before the grant existed keep the whole share, as they had it;
    every other project starts with none (a server administrator grants a folder)."""
    Image = apps.get_model("datasets", "Image")
    Project = apps.get_model("projects", "Project")
    used = Image.objects.filter(slide_root="slides").values("project_id")
    Project.objects.filter(pk__in=used).update(slides_folder=".")


class Migration(migrations.Migration):

    dependencies = [
        ("projects", "0001_initial"),
        ("datasets", "0003_slides"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="slides_folder",
            field=models.CharField(
                blank=True, db_default="", default="", max_length=1024,
                help_text="the folder under SLIDES_ROOT whose slides this project's curators may register by path: "
                          "a path relative to SLIDES_ROOT, '.' for all of it, empty for none (slides are then "
                          "uploaded)"),
        ),
        migrations.RunPython(keep_registering_where_they_did, migrations.RunPython.noop),
    ]
