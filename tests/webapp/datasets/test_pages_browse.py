"""Home, project, dataset and viewer pages, and the image files behind them."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from webapp.datasets import views
from webapp.datasets.models import CurrentLabel, Image, LabelClass, Nucleus
from webapp.jobs.models import Job
from webapp.projects.models import Membership, Project, Role

pytestmark = pytest.mark.django_db


def test_home_lists_the_users_projects_with_counts(client, viewer_project, owner, outsider):
    vp = viewer_project
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.FAILED, created_by=owner, project=vp.project,
                             error="images/x.png: not an image")
    client.force_login(owner)
    html = client.get("/").content.decode()
    # The recent-jobs table (shared with the project page): link, state, error and who started it.
    jobs = re.search(r'<section class="card" id="jobs">(.*?)</section>', html, re.S).group(1)
    assert f'href="/jobs/{job.pk}/"' in jobs and "state-failed" in jobs and "images/x.png: not an image" in jobs
    assert f"<td>{owner.username}</td>" in jobs
    row = re.search(r'<tr><td><a href="/projects/%d/">Colon merge</a>.*?</tr>' % vp.project.pk, html, re.S).group(0)
    nuclei = vp.alpha.nucleus_count + vp.beta.nucleus_count
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["2", "4", str(nuclei)]
    assert "<td>admin</td>" in row
    assert 'action="/projects/new/"' in html

    client.force_login(outsider)
    html = client.get("/").content.decode()
    assert "Colon merge" not in html
    assert "not a member of any project" in html
    assert "images/x.png" not in html and "No jobs yet." in html   # an outsider does not see the project's jobs


def test_new_project_form_creates_a_project_with_its_creator_as_admin(client, owner):
    client.force_login(owner)
    response = client.post("/projects/new/", {"name": "  Breast  ", "description": "PanNuke breast"})
    project = Project.objects.get(name="Breast")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert project.description == "PanNuke breast"
    assert Membership.objects.get(project=project, user=owner).role == Role.ADMIN
    page = client.get(response["Location"]).content.decode()
    assert "<h1>Breast</h1>" in page and "No datasets yet" in page

    response = client.post("/projects/new/", {"name": "  "}, follow=True)
    assert "A project needs a name." in response.content.decode()
    assert Project.objects.count() == 1
    assert client.get("/projects/new/").status_code == 405


def test_project_page_shows_datasets_label_sets_counts_and_jobs(client, viewer_project, owner):
    vp = viewer_project
    Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.FAILED, created_by=owner, project=vp.project,
                       error="masks/a.npy: not an instance map")
    client.force_login(owner)
    html = client.get(f"/projects/{vp.project.pk}/").content.decode()

    # Datasets with format, label set, counts and the COCO export link.
    for dataset in (vp.alpha, vp.beta):
        assert f'href="/projects/{vp.project.pk}/datasets/{dataset.pk}/">{dataset.name}</a>' in html
        assert f'href="/api/datasets/{dataset.pk}/export/coco.zip"' in html
    assert "Seed (png + npy mask + npy types)" in html
    assert f'href="/api/projects/{vp.project.pk}/export/merged.csv?bom=yes"' in html

    # One bar per class, in the class colour, with the current-label count.
    for label_set in (vp.alpha_set, vp.beta_set):
        figure = re.search(r'<figure class="label-set" data-label-set="%s">(.*?)</figure>' % label_set.name,
                           html, re.S).group(1)
        for cls in LabelClass.objects.filter(label_set=label_set):
            count = CurrentLabel.objects.filter(label_set=label_set, class_index=cls.index).count()
            assert re.search(r'fill="%s" class="bar" data-count="%d"' % (cls.color, count), figure), cls.name
            assert f">{cls.name}</text>" in figure
            # Screen readers get the counts as a list (the chart itself is hidden from them).
            assert f"<li>{cls.name}: {count} nuclei, " in figure
    assert "3 reviewed" in html  # three nuclei reviewed in beta

    # Recent jobs, with the error of a failed one; curators and admins get the upload form.
    assert "masks/a.npy: not an instance map" in html
    assert 'id="upload-form"' in html and f'data-url="/api/projects/{vp.project.pk}/datasets/"' in html
    assert all(f'<option value="{value}">' in html for value in ("seed", "hovernet", "coco", "geojson", "pannuke"))
    assert 'name="archive"' in html and 'name="labelled"' in html and 'name="label_set"' in html
    assert "js/upload.js" in html and "js/jobs.js" in html


def test_viewers_and_reviewers_do_not_get_the_upload_form(client, viewer_project, member, owner):
    vp = viewer_project
    client.force_login(member)
    html = client.get(f"/projects/{vp.project.pk}/").content.decode()
    assert "<h2>Datasets</h2>" in html and 'id="upload-form"' not in html
    Membership.objects.filter(project=vp.project, user=member).update(role=Role.CURATOR)
    assert 'id="upload-form"' in client.get(f"/projects/{vp.project.pk}/").content.decode()


def test_dataset_page_is_a_paged_grid_of_thumbnails_with_counts(client, viewer_project, member, monkeypatch):
    vp = viewer_project
    client.force_login(member)
    html = client.get(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").content.decode()
    images = list(Image.objects.filter(dataset=vp.alpha).order_by("name"))
    cards = re.findall(r'<a class="thumb" href="/projects/%d/images/(\d+)/"' % vp.project.pk, html)
    assert cards == [str(i.pk) for i in images]
    for image in images:
        assert f'src="/media-files/images/{image.pk}/thumbnail"' in html
    counts = re.findall(r'<span data-count="nuclei">(\d+)</span> nuclei', html)
    assert counts == [str(Nucleus.objects.filter(image=i).count()) for i in images]
    assert "3 reviewed" in html  # the first image
    assert f"/api/datasets/{vp.alpha.pk}/export/coco.zip?segmentation=rle" in html

    monkeypatch.setattr(views, "IMAGES_PER_PAGE", 1)
    page2 = client.get(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/?page=2").content.decode()
    assert re.findall(r'/images/(\d+)/" data-image-id', page2) == [str(images[1].pk)]
    assert "page 2 of 2" in page2 and "?page=1" in page2


def test_dataset_of_another_project_is_not_found_through_this_one(client, viewer_project, owner, tmp_path):
    from tests.webapp.viewer_project import build_viewer_project

    vp = viewer_project
    other = build_viewer_project(owner, tmp_path / "other", name="Other", n_images=1, nuclei=4, size=64)
    client.force_login(owner)
    assert client.get(f"/projects/{vp.project.pk}/datasets/{other.alpha.pk}/").status_code == 404
    assert client.get(f"/projects/{vp.project.pk}/images/{other.image.pk}/").status_code == 404
    assert client.get(f"/projects/{other.project.pk}/images/{other.image.pk}/").status_code == 200


def test_viewer_page_has_the_controls_and_links(client, viewer_project, member):
    vp = viewer_project
    client.force_login(member)
    html = client.get(f"/projects/{vp.project.pk}/images/{vp.image.pk}/").content.decode()
    assert f'data-nuclei-url="/api/images/{vp.image.pk}/nuclei/"' in html
    assert f'src="/media-files/images/{vp.image.pk}/image"' in html
    assert f'viewBox="-0.5 -0.5 {vp.image.width} {vp.image.height}"' in html  # outlines in pixel centres
    assert f'<option value="{vp.alpha_set.pk}" selected>alpha-types</option>' in html
    assert f'<option value="{vp.beta_set.pk}">beta-types</option>' in html
    sources = re.findall(r'<select id="source">(.*?)</select>', html, re.S)[0]
    assert re.findall(r'value="(\w+)"', sources) == ["current", "ground_truth", "review"]  # no predictions yet
    assert f"/api/images/{vp.image.pk}/export.geojson?label_set=beta-types" in html
    assert f"/api/images/{vp.image.pk}/export/types.npy?label_set=alpha-types" in html
    assert 'data-nav="next"' in html and 'data-nav="previous"' not in html
    assert "js/viewer.js" in html


def test_image_files_are_served_to_members_only(client, viewer_project, member, outsider):
    vp = viewer_project
    client.force_login(member)
    for kind, relative in (("image", vp.image.file), ("thumbnail", vp.image.thumbnail_file)):
        response = client.get(f"/media-files/images/{vp.image.pk}/{kind}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == (Path(settings.MEDIA_ROOT) / relative).read_bytes()
        assert response["Content-Type"] in ("image/png", "image/jpeg")
    assert client.get(f"/media-files/images/{vp.image.pk}/mask").status_code == 404
    assert client.get(f"/media-files/images/{vp.image.pk}/..%2f..%2fsecret_key").status_code == 404

    client.force_login(outsider)
    assert client.get(f"/media-files/images/{vp.image.pk}/image").status_code == 404
    client.logout()
    response = client.get(f"/media-files/images/{vp.image.pk}/image")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_a_stored_path_outside_media_root_is_never_served(client, viewer_project, owner):
    vp = viewer_project
    Image.objects.filter(pk=vp.image.pk).update(file="../../etc/passwd")
    client.force_login(owner)
    assert client.get(f"/media-files/images/{vp.image.pk}/image").status_code == 404


def page_urls(vp):
    p = vp.project.pk
    return [f"/projects/{p}/", f"/projects/{p}/datasets/{vp.alpha.pk}/", f"/projects/{p}/images/{vp.image.pk}/",
            f"/media-files/images/{vp.image.pk}/image", f"/media-files/images/{vp.image.pk}/thumbnail"]


def api_urls(vp):
    i = vp.image.pk
    return [f"/api/images/{i}/nuclei/", f"/api/projects/{vp.project.pk}/export/merged.csv",
            f"/api/images/{i}/export.geojson", f"/api/images/{i}/export.geojson?label_set=beta-types",
            f"/api/images/{i}/export/types.npy?label_set=alpha-types", f"/api/datasets/{vp.alpha.pk}/export/coco.zip"]


def test_outsiders_get_404_on_every_page_and_api_endpoint(client, api_client_for, viewer_project, outsider):
    vp = viewer_project
    client.force_login(outsider)
    for url in page_urls(vp):
        assert client.get(url).status_code == 404, url
    api = api_client_for(outsider)
    for url in api_urls(vp):
        response = api.get(url)
        assert response.status_code == 404, url
        assert response.json()["detail"], url


def test_members_of_any_role_can_view_everything(client, api_client_for, viewer_project, member):
    vp = viewer_project
    for role in (Role.VIEWER, Role.REVIEWER):
        Membership.objects.filter(project=vp.project, user=member).update(role=role)
        client.force_login(member)
        for url in page_urls(vp):
            assert client.get(url).status_code == 200, (role, url)
        api = api_client_for(member)
        for url in api_urls(vp):
            assert api.get(url).status_code == 200, (role, url)


def test_anonymous_api_requests_are_refused_with_json(client, viewer_project):
    for url in api_urls(viewer_project):
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert response.status_code in (401, 403), url
        assert "credentials" in response.json()["detail"].lower()
