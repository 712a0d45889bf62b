"""Slivers (nuclei cut by their image's edge, or tiny) come after every other nucleus in the uncertainty
orders: a fragment's prediction is uncertain because it is a fragment, so entropy put them first."""

import numpy as np
import pytest
from django.utils import timezone

from tests.webapp.review_project import add_members, build_review_project, unlabelled_in
from webapp.datasets.models import Nucleus
from webapp.training.models import ModelVersion, Prediction
from webapp.training.operations import do_store_predictions

pytestmark = pytest.mark.django_db


def prediction(nucleus_id, label_set, version, entropy):
    probs = [0.4, 0.35, 0.25]
    return Prediction(nucleus_id=nucleus_id, label_set=label_set, model_version=version, class_index=0,
                      probability=0.4, base_probs=probs, mlp_probs=probs, least_confidence=0.6, margin=0.95,
                      entropy=entropy, disagreement=0.0)


def test_slivers_are_marked_and_served_after_the_other_nuclei(users, media_root, tmp_path, api_client_for):
    rp = build_review_project(users["owner"], tmp_path / "src", predictions=False, images=1, nuclei=6)
    add_members(rp.project, users)
    queue = sorted(unlabelled_in(rp, rp.breast_set))  # the colon dataset's nuclei: no breast label
    assert len(queue) == 6
    image = Nucleus.objects.get(pk=queue[0]).image
    # Geometry as a tile's edge cuts it: one nucleus on the left border, one on the bottom, one tiny.
    Nucleus.objects.filter(pk=queue[0]).update(x0=0)
    Nucleus.objects.filter(pk=queue[1]).update(y1=image.height)
    Nucleus.objects.filter(pk=queue[2]).update(area=12)
    Nucleus.objects.filter(pk__in=queue[3:]).update(x0=20, y0=20, x1=30, y1=30, area=80)
    version = ModelVersion.objects.create(project=rp.project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)
    entropy = dict(zip(queue, np.linspace(1.0, 0.5, 6).tolist()))  # the slivers are the most uncertain
    do_store_predictions(version, [prediction(n, rp.breast_set, version, entropy[n]) for n in queue])
    assert set(Prediction.objects.filter(sliver=True).values_list("nucleus_id", flat=True)) == set(queue[:3])

    client = api_client_for(users["reviewer"])
    served = []
    for _ in range(6):
        body = client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast&strategy=entropy").json()
        served.append(body["nucleus"]["id"])
        assert client.post(f"/api/nuclei/{served[-1]}/labels/", {"label_set": "breast", "class_name": "dead",
                                                                  "version": body["version"]},
                           format="json").status_code == 201
    assert served == queue[3:] + queue[:3]  # by entropy among the whole nuclei, then among the slivers
