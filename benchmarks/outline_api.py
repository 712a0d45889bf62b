"""Server-side time of GET /api/images/<id>/nuclei/ for an image with 3,000 nuclei.

    .venv/bin/python benchmarks/outline_api.py [--nuclei 3000] [--label-sets 3] [--repeat 30]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/nucleus_bench .venv/bin/python benchmarks/outline_api.py

Runs in-process with Django's test Client (middleware, authentication, view, queries and JSON encoding;
no network) against a throw-away test database made from the configured one (``test_<name>`` on
PostgreSQL, a separate file on SQLite), dropped at the end. The nuclei are real synthetic nuclei
(mlcore.synthetic) with the outlines the importer stores, inserted with bulk_create; every nucleus has a
ground-truth label in the first label set, a tenth of them a review in each other label set, and (unless
--no-predictions) an active model version predicts every nucleus in every label set.
Prints figures only: the target is a median under 200 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def make_image(nuclei: int, seed: int = 0):
    """A synthetic tile big enough for ``nuclei`` nuclei: (instance map, {id: class}, geometry, outlines)."""
    import numpy as np

    from mlcore.synthetic import generate_tile
    from mlcore.writers import nucleus_geometry, nucleus_outlines

    side = int((nuclei * 1100) ** 0.5)  # about 9 % of the area covered by nuclei
    rng = np.random.default_rng(seed)
    _, instance_map, classes = generate_tile(rng, (side, side), int(nuclei * 1.15), n_classes=4)
    # Keep exactly ``nuclei`` instances (placement skips some when crowded; we asked for more).
    instance_map[instance_map > nuclei] = 0
    return side, instance_map, classes, nucleus_geometry(instance_map), nucleus_outlines(instance_map)


def populate(nuclei: int, label_sets: int, predictions: bool = True):
    from django.contrib.auth import get_user_model

    from webapp.datasets.models import (CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource,
                                        Nucleus)
    from webapp.projects.operations import do_create_project

    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = do_create_project("Benchmark", actor=user)
    sets = []
    for k in range(label_sets):
        label_set = LabelSet.objects.create(project=project, name=f"taxonomy-{k}")
        LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=f"class-{k}-{i}",
                                                   color=f"#{(40 * i + 60 * k) % 256:02x}8040") for i in range(4)])
        sets.append(label_set)
    side, instance_map, classes, geometry, outlines = make_image(nuclei)
    dataset = Dataset.objects.create(project=project, name="bench", label_set=sets[0], format="seed",
                                     storage_dir="bench", image_count=1, nucleus_count=len(geometry))
    image = Image.objects.create(project=project, dataset=dataset, name="tile", file="bench/tile.png",
                                 mask_file="bench/tile.png", thumbnail_file="bench/tile.jpg", width=side,
                                 height=side, checksum="0" * 64, nucleus_count=len(geometry))
    rows = Nucleus.objects.bulk_create([
        Nucleus(image=image, instance_id=int(g["id"]), x0=int(g["x0"]), y0=int(g["y0"]), x1=int(g["x1"]),
                y1=int(g["y1"]), centroid_x=float(g["cx"]), centroid_y=float(g["cy"]), area=int(g["area"]),
                outline=outlines[int(g["id"])]) for g in geometry], batch_size=2000)
    labels = [Label(nucleus=n, label_set=sets[0], class_index=classes[n.instance_id] % 4,
                    source=LabelSource.GROUND_TRUTH) for n in rows]
    for k, label_set in enumerate(sets[1:], start=1):
        labels += [Label(nucleus=n, label_set=label_set, class_index=(n.instance_id + k) % 4,
                         source=LabelSource.REVIEW, author=user) for n in rows[k::10]]
    labels = Label.objects.bulk_create(labels, batch_size=2000)
    CurrentLabel.objects.bulk_create([CurrentLabel(nucleus_id=l.nucleus_id, label_set_id=l.label_set_id, label=l,
                                                   class_index=l.class_index, source=l.source) for l in labels],
                                     batch_size=2000)
    if predictions:
        from django.utils import timezone

        from webapp.training.models import ModelVersion, Prediction

        version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="bench/v1.pt",
                                              data_snapshot_at=timezone.now(), is_active=True)
        probs = [0.7, 0.1, 0.1, 0.1]
        Prediction.objects.bulk_create([
            Prediction(nucleus=n, label_set=label_set, model_version=version, class_index=(n.instance_id + k) % 4,
                       probability=0.7, base_probs=probs, mlp_probs=probs, least_confidence=0.3, margin=0.6,
                       entropy=0.9, disagreement=0.0)
            for k, label_set in enumerate(sets) for n in rows], batch_size=2000)
    points = sum(len(o) for o in outlines.values())
    return user, image, len(rows), len(labels), points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=3000)
    parser.add_argument("--label-sets", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-predictions", action="store_true", help="no model version (nothing predicted yet)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment, teardown_test_environment

    from webapp.datasets import queries

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        started = time.perf_counter()
        user, image, n_nuclei, n_labels, points = populate(args.nuclei, args.label_sets, not args.no_predictions)
        print(f"database: {connection.vendor} ({test_name}); image {image.width}x{image.height} with "
              f"{n_nuclei} nuclei, {points} outline points, {n_labels} labels in {args.label_sets} label sets, "
              f"{'no predictions' if args.no_predictions else 'a prediction per nucleus and label set'} "
              f"(made in {time.perf_counter() - started:.1f} s)")
        client = Client()
        client.force_login(user)
        url = f"/api/images/{image.pk}/nuclei/"
        response = client.get(url)  # warm-up: imports, URL resolver, connection
        assert response.status_code == 200, response.content[:300]
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        size = len(response.content)
        sql = [query["sql"] for query in captured.captured_queries]  # now: the next request resets the log
        if os.environ.get("SHOW_QUERIES"):
            for text in sql:
                print("  ", text[:160])

        totals, cpu, builds = [], [], []
        project = image.project
        for _ in range(args.repeat):  # interleaved, so that a busy machine slows both alike
            t0, c0 = time.perf_counter(), time.process_time()
            client.get(url)
            t1, c1 = time.perf_counter(), time.process_time()
            queries.image_nuclei_json(project, image)
            builds.append(time.perf_counter() - t1)
            totals.append(t1 - t0)
            cpu.append(c1 - c0)

        ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
        p90 = lambda values: 1000 * sorted(values)[int(0.9 * (len(values) - 1))]  # noqa: E731
        print(f"GET {url}: median {ms(totals):.1f} ms, p90 {p90(totals):.1f} ms, min {1000 * min(totals):.1f} ms "
              f"over {args.repeat} requests; {len(sql)} queries (session and access checks included); "
              f"{size / 1e6:.2f} MB of JSON")
        print(f"  CPU time of this process per request (the web server's own work, without waiting for a busy "
              f"CPU or for the database server): median {ms(cpu):.1f} ms")
        print(f"  of which the queries and the JSON text (queries.image_nuclei_json): median {ms(builds):.1f} ms; "
              f"the rest is authentication, access checks and middleware")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
        teardown_test_environment()
    return 0


if __name__ == "__main__":
    sys.exit(main())
