"""The merged project table: one streamed CSV row per nucleus, every label set side by side."""

import csv
import io
import json

import pytest

from tests.webapp.viewer_project import ALPHA_CLASSES, BETA_CLASSES, build_viewer_project
from webapp.datasets import export
from webapp.datasets.models import Label, LabelSource, Nucleus

pytestmark = pytest.mark.django_db


def read_csv(response) -> list[dict]:
    assert response.streaming  # never built whole in memory
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_merged_csv_has_every_nucleus_with_ground_truth_and_reviews_per_label_set(api_client_for, viewer_project,
                                                                                  member, owner, tmp_path):
    vp = viewer_project
    build_viewer_project(owner, tmp_path / "other", name="Other project", n_images=1, nuclei=5, size=64)
    response = api_client_for(member).get(f"/api/projects/{vp.project.pk}/export/merged.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="Colon_merge-merged.csv"'
    rows = read_csv(response)

    assert list(rows[0]) == ["project", "dataset", "image", "instance_id", "centroid_x", "centroid_y", "area",
                             "alpha-types:ground_truth", "alpha-types:reviewed", "alpha-types:reviewer",
                             "alpha-types:predicted", "alpha-types:probability", "alpha-types:disagreement",
                             "beta-types:ground_truth", "beta-types:reviewed", "beta-types:reviewer",
                             "beta-types:predicted", "beta-types:probability", "beta-types:disagreement"]
    nuclei = Nucleus.objects.filter(image__project=vp.project).select_related("image", "image__dataset").order_by("id")
    assert len(rows) == nuclei.count() == vp.alpha.nucleus_count + vp.beta.nucleus_count
    assert {r["project"] for r in rows} == {"Colon merge"}  # nothing from the other project

    truth = {(n, ls): c for n, ls, c in Label.objects.filter(source=LabelSource.GROUND_TRUTH)
             .values_list("nucleus_id", "label_set_id", "class_index")}
    names = {vp.alpha_set.pk: ALPHA_CLASSES, vp.beta_set.pk: BETA_CLASSES}
    for row, nucleus in zip(rows, nuclei):
        assert (row["dataset"], row["image"], int(row["instance_id"])) == (
            nucleus.image.dataset.name, nucleus.image.name, nucleus.instance_id)
        assert float(row["centroid_x"]) == pytest.approx(nucleus.centroid_x, abs=0.0051)
        assert float(row["centroid_y"]) == pytest.approx(nucleus.centroid_y, abs=0.0051)
        assert int(row["area"]) == nucleus.area
        for ls, prefix in ((vp.alpha_set.pk, "alpha-types"), (vp.beta_set.pk, "beta-types")):
            gt = truth.get((nucleus.pk, ls))
            assert row[f"{prefix}:ground_truth"] == (names[ls][gt] if gt is not None else "")
            reviewed = vp.reviewed.get(nucleus.pk, {}).get(ls)
            assert row[f"{prefix}:reviewed"] == (names[ls][reviewed] if reviewed is not None else "")
            assert row[f"{prefix}:reviewer"] == ("owner" if reviewed is not None else "")   # who corrected it
            assert row[f"{prefix}:predicted"] == row[f"{prefix}:probability"] == ""  # no predictions yet
            assert row[f"{prefix}:disagreement"] == ""
    # The dataset's own taxonomy is filled from ground truth; the other one only where reviewed.
    alpha_rows = [r for r in rows if r["dataset"] == "alpha"]
    assert all(r["alpha-types:ground_truth"] for r in alpha_rows)
    assert sum(bool(r["beta-types:reviewed"]) for r in alpha_rows) == 3
    beta_rows = [r for r in rows if r["dataset"] == "beta"]
    assert not any(r["alpha-types:ground_truth"] for r in beta_rows)
    assert 0 < sum(bool(r["beta-types:ground_truth"]) for r in beta_rows) < len(beta_rows)  # some unlabelled


def test_small_chunks_give_the_same_table(viewer_project):
    whole = list(export.merged_csv_rows(viewer_project.project))
    assert list(export.merged_csv_rows(viewer_project.project, chunk=7)) == whole
    assert len(whole) == 1 + Nucleus.objects.filter(image__project=viewer_project.project).count()


def test_an_empty_project_gives_the_header_only(api_client_for, owner):
    from webapp.projects.operations import do_create_project

    project = do_create_project("Empty", actor=owner)
    rows = b"".join(api_client_for(owner).get(f"/api/projects/{project.pk}/export/merged.csv").streaming_content)
    assert rows == b"project,dataset,image,instance_id,centroid_x,centroid_y,area\r\n"


def test_excel_gets_a_byte_order_mark_when_asked_and_scripts_do_not(api_client_for, owner, client):
    """Excel read a CSV without one in the computer's old code page (é as Ã©); Python's csv module would read one
    into the first column's name, so only the page's links ask for it."""
    from webapp.projects.operations import do_create_project

    project = do_create_project("Épithélium", actor=owner)
    url = f"/api/projects/{project.pk}/export/merged.csv"
    api = api_client_for(owner)
    assert b"".join(api.get(url).streaming_content).startswith(b"project,")
    assert b"".join(api.get(url, {"bom": "yes"}).streaming_content).startswith(b"\xef\xbb\xbfproject,")
    assert api.get(url, {"bom": "maybe"}).status_code == 400
    client.force_login(owner)
    assert f'href="{url}?bom=yes" download' in client.get(f"/projects/{project.pk}/").content.decode()


def test_a_non_latin_project_name_names_the_file(api_client_for, owner):
    """It was "-merged.csv": every letter outside A-Z was dropped. Sent as RFC 6266's filename*."""
    from webapp.projects.operations import do_create_project

    project = do_create_project("乳腺癌: 第2期", actor=owner)
    response = api_client_for(owner).get(f"/api/projects/{project.pk}/export/merged.csv")
    assert response["Content-Disposition"] == (
        "attachment; filename*=utf-8''%E4%B9%B3%E8%85%BA%E7%99%8C_%E7%AC%AC2%E6%9C%9F-merged.csv")


def test_a_client_asking_for_csv_gets_it_and_errors_stay_json(api_client_for, viewer_project, member, outsider):
    url = f"/api/projects/{viewer_project.project.pk}/export/merged.csv"
    ok = api_client_for(member).get(url, HTTP_ACCEPT="text/csv")
    assert ok.status_code == 200 and b"".join(ok.streaming_content).startswith(b"project,dataset")
    refused = api_client_for(outsider).get(url, HTTP_ACCEPT="text/csv")
    assert refused.status_code == 404
    assert "not a member" in json.loads(refused.content)["detail"]


def test_predicted_class_probability_and_disagreement_come_from_the_active_model_version(viewer_project):
    from tests.webapp.viewer_project import add_predictions, prediction_disagreement

    vp = viewer_project
    expected = add_predictions(vp)
    rows = list(csv.DictReader(io.StringIO("".join(export.merged_csv_rows(vp.project, chunk=5)))))
    nuclei = list(Nucleus.objects.filter(image__project=vp.project).order_by("id")
                  .values_list("id", "image_id", "instance_id"))
    names = {vp.alpha_set.pk: ("alpha-types", ALPHA_CLASSES), vp.beta_set.pk: ("beta-types", BETA_CLASSES)}
    assert {prediction_disagreement(i) for _, image_id, i in nuclei if image_id == vp.image.pk} != {0.0}
    for row, (pk, image_id, instance_id) in zip(rows, nuclei):
        for ls, (prefix, classes) in names.items():
            if image_id == vp.image.pk:
                index, probability = expected[pk, ls]
                assert row[f"{prefix}:predicted"] == classes[index]
                assert float(row[f"{prefix}:probability"]) == pytest.approx(probability)
                assert float(row[f"{prefix}:disagreement"]) == pytest.approx(prediction_disagreement(instance_id))
            else:  # only the first image was predicted
                assert row[f"{prefix}:predicted"] == row[f"{prefix}:probability"] == ""
                assert row[f"{prefix}:disagreement"] == ""


def test_names_a_spreadsheet_would_run_are_written_as_text(api_client_for, owner, tmp_path, media_root):
    """Uploaded names reach the table as they were named, but a cell starting with = + - @ would be a formula in
    Excel or LibreOffice (CSV injection): such a cell starts with an apostrophe, which they read as "text"."""
    from django.test import override_settings

    from tests.generated_datasets import generated_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.projects.operations import do_create_project

    classes = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2", "@SUM(1)", "plain"]
    project = do_create_project("=1+1 project", actor=owner)
    root = generated_dataset(tmp_path / "formulas", "seed", n_images=1, nuclei_per_image=12, class_names=classes,
                             seed=3, size=(64, 64))
    with override_settings(IMPORT_PROCESSES=1):
        do_import_dataset(project, name="=2+3", format="seed", path=root, actor=owner, label_set_name="@types")
    response = api_client_for(owner).get(f"/api/projects/{project.pk}/export/merged.csv")
    assert response.status_code == 200
    rows = read_csv(response)
    assert rows and {r["project"] for r in rows} == {"'=1+1 project"}
    assert {r["dataset"] for r in rows} == {"'=2+3"}
    assert "'@types:ground_truth" in rows[0]
    written = {r["'@types:ground_truth"] for r in rows}
    assert written <= {"'" + name for name in classes[:4]} | {"plain"} and len(written) > 1
    assert all(not cell.startswith(export.FORMULA_PREFIXES) for row in rows for cell in row.values())
    assert float(rows[0]["centroid_x"]) >= 0     # numbers stay numbers
