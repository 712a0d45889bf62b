"""Latency of the slide viewer's API on a slide of 500,000 nuclei: Deep Zoom tiles (uncached and cached) at
every zoom level, the nuclei of a viewport at the outline zoom, and the density grid when zoomed out.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/nm_bench .venv/bin/python benchmarks/slide_viewer.py \
        [--nuclei 500000] [--side 32768] [--repeat 40]

Runs in-process with Django's test Client (middleware, session authentication, access checks, view, queries,
JSON or JPEG encoding; no network) against a throw-away database made from the configured one
(``<name>_slidebench``), dropped at the end. The slide is a pyramidal tiled TIFF of ``--side`` pixels
square at 0.25 um/px, written tile by tile from a few synthetic tissue tiles (zlib), so that it costs
seconds and no memory whatever its size; OpenSlide reads it like any generic tiled TIFF. The nuclei are
synthetic ellipses (14-point outlines) on a jittered grid, one per ~2,100 px^2 as in CoNSeP at 40x, bulk
inserted with COPY (PostgreSQL), each with a ground-truth label in one label set and every tenth a review
in a second one. Targets (issue 17): p95 under 150 ms for a cached tile, under 400 ms for the nuclei of a
viewport at the outline zoom. Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

OUTLINE_POINTS = 14
VIEW = (1280, 800)  # screen pixels of the viewer


def write_slide(path: Path, side: int, mpp: float = 0.25, tile: int = 256, distinct: int = 24) -> int:
    """A ``side`` x ``side`` pyramidal TIFF from ``distinct`` synthetic tissue tiles per level, encoded once."""
    import numpy as np
    import tifffile

    from mlcore.synthetic import generate_tile

    rng = np.random.default_rng(0)
    levels = []
    size = side
    while True:
        levels.append(size)
        if size // 2 < 512:
            break
        size //= 2
    pixels_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, size in enumerate(levels):
            encoded = [zlib.compress(generate_tile(rng, (tile, tile), 30)[0].tobytes(), 1) for _ in range(distinct)]
            count = (-(-size // tile)) ** 2
            tiles = (encoded[(k * 7 + k // 3) % distinct] for k in range(count))
            factor = side / size
            tif.write(tiles, shape=(size, size, 3), dtype="uint8", tile=(tile, tile), photometric="rgb",
                      compression="zlib", resolution=(pixels_per_cm / factor, pixels_per_cm / factor),
                      resolutionunit="CENTIMETER", subfiletype=1 if index else 0, metadata=None)
    return len(levels)


def populate(slide_file: str, side: int, nuclei: int, seed: int = 0):
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from webapp.datasets import bulk
    from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, Nucleus
    from webapp.projects.operations import do_create_project

    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = do_create_project("Slide benchmark", actor=user)
    sets = []
    for k, n_classes in enumerate((4, 3)):
        label_set = LabelSet.objects.create(project=project, name=f"taxonomy-{k}")
        LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=f"class-{k}-{i}",
                                                   color=f"#{(50 * i + 90 * k) % 256:02x}7040") for i in range(n_classes)])
        sets.append(label_set)
    dataset = Dataset.objects.create(project=project, name="slides", label_set=sets[0], format="slide",
                                     storage_dir="bench", image_count=1, nucleus_count=nuclei)
    image = Image.objects.create(project=project, dataset=dataset, name="bench.tif", file="bench/preview.png",
                                 mask_file="", thumbnail_file="bench/thumb.png", width=side, height=side,
                                 checksum="slide-bench", nucleus_count=nuclei, slide_file=slide_file,
                                 slide_root="media", mpp=0.25)
    rng = np.random.default_rng(seed)
    per_row = int(np.ceil(np.sqrt(nuclei)))
    spacing = (side - 40) / per_row
    index = np.arange(nuclei)
    cx = 20 + (index % per_row + 0.5) * spacing + rng.uniform(-0.3, 0.3, nuclei) * spacing
    cy = 20 + (index // per_row + 0.5) * spacing + rng.uniform(-0.3, 0.3, nuclei) * spacing
    rx, ry = rng.uniform(4, 10, nuclei), rng.uniform(4, 10, nuclei)
    angles = np.linspace(0, 2 * np.pi, OUTLINE_POINTS, endpoint=False)
    classes0 = rng.integers(0, 4, nuclei)
    with transaction.atomic():
        ids = bulk.allocate_ids(Nucleus, nuclei)
        lines = []
        for k in range(nuclei):
            xs = np.round(cx[k] + rx[k] * np.cos(angles)).astype(int)
            ys = np.round(cy[k] + ry[k] * np.sin(angles)).astype(int)
            outline = ",".join(f"[{x},{y}]" for x, y in zip(xs, ys))
            lines.append(f"{ids[k]}\t{image.pk}\t{k + 1}\t{xs.min()}\t{ys.min()}\t{xs.max() + 1}\t{ys.max() + 1}\t"
                         f"{float(cx[k])!r}\t{float(cy[k])!r}\t{int(np.pi * rx[k] * ry[k])}\t[{outline}]\n")
        bulk.copy_text(Nucleus, ["id", "image_id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x",
                                 "centroid_y", "area", "outline"], lines)
        reviewed = list(range(0, nuclei, 10))
        label_ids = bulk.allocate_ids(Label, nuclei + len(reviewed))
        now = "2026-01-01 00:00:00+00"
        label_lines = [f"{label_ids[k]}\t{ids[k]}\t{sets[0].pk}\t{classes0[k]}\tground_truth\t\\N\t\\N\t\\N\t\t{now}\n"
                       for k in range(nuclei)]
        label_lines += [f"{label_ids[nuclei + j]}\t{ids[k]}\t{sets[1].pk}\t{k % 3}\treview\t{user.pk}\t\\N\t\\N\t\t{now}\n"
                        for j, k in enumerate(reviewed)]
        columns = ["id", "nucleus_id", "label_set_id", "class_index", "source", "author_id", "model_version_id",
                   "previous_id", "client_id", "created_at"]
        bulk.copy_text(Label, columns, label_lines)
        current = [f"{label_ids[k]}\t{ids[k]}\t{sets[0].pk}\t{label_ids[k]}\t{classes0[k]}\tground_truth\n"
                   for k in range(nuclei)]
        current += [f"{label_ids[nuclei + j]}\t{ids[k]}\t{sets[1].pk}\t{label_ids[nuclei + j]}\t{k % 3}\treview\n"
                    for j, k in enumerate(reviewed)]
        bulk.copy_text(CurrentLabel, ["id", "nucleus_id", "label_set_id", "label_id", "class_index", "source"], current)
    bulk.analyze(Nucleus, Label, CurrentLabel)
    return user, image


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {1000 * statistics.median(ordered):6.1f} ms  p95 {1000 * p95:6.1f} ms"


def timed(client, url: str, expect: int = 200) -> tuple[float, object]:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == expect, (url, response.status_code, response.content[:300])
    return elapsed, response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuclei", type=int, default=500_000)
    parser.add_argument("--side", type=int, default=32768, help="slide width and height in level-0 pixels")
    parser.add_argument("--repeat", type=int, default=40, help="requests per figure")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment, teardown_test_environment

    from webapp.datasets import slides

    media = Path(tempfile.mkdtemp(prefix="slidebench-"))
    settings.MEDIA_ROOT = media
    # A cache of this process: a shared Redis could hold a previous run's density under the same key.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{old_name}_slidebench"
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        (media / "bench").mkdir()
        started = time.perf_counter()
        n_levels = write_slide(media / "bench" / "bench.tif", args.side)
        size_mb = (media / "bench" / "bench.tif").stat().st_size / 1e6
        print(f"slide: {args.side} x {args.side} px, {n_levels} TIFF levels, {size_mb:.0f} MB "
              f"(written in {time.perf_counter() - started:.1f} s)")
        started = time.perf_counter()
        user, image = populate("bench/bench.tif", args.side, args.nuclei)
        print(f"database: {connection.vendor} ({test_name}); {args.nuclei} nuclei, "
              f"{args.nuclei + args.nuclei // 10} labels inserted in {time.perf_counter() - started:.1f} s")
        client = Client()
        client.force_login(user)
        rng = random.Random(1)
        base = f"/api/images/{image.pk}"
        timed(client, f"{base}/slide.dzi")  # warm-up: imports, URL resolver, the slide opened once
        generator = slides.deep_zoom(image).generator

        print(f"\nDeep Zoom tiles (254 + 1 overlap, JPEG q{slides.JPEG_QUALITY}), {args.repeat} random tiles per level;"
              " uncached = rendered from the slide, cached = the same tiles again:")
        cached_all = []
        for level in range(generator.level_count - 1, -1, -1):
            cols, rows = generator.level_tiles[level]
            if cols * rows < 4 and level < generator.level_count - 4:
                break
            picks = [(rng.randrange(cols), rng.randrange(rows)) for _ in range(args.repeat)]
            picks = list(dict.fromkeys(picks))
            uncached = [timed(client, f"{base}/slide_files/{level}/{c}_{r}.jpeg")[0] for c, r in picks]
            cached = [timed(client, f"{base}/slide_files/{level}/{c}_{r}.jpeg")[0] for c, r in picks]
            cached_all += cached
            print(f"  level {level:2d} ({cols:4d} x {rows:4d} tiles, 1 px = {2 ** (generator.level_count - 1 - level):5d} "
                  f"slide px): uncached {percentiles(uncached)} | cached {percentiles(cached)}")
        print(f"  all levels, cached: {percentiles(cached_all)}  (target: p95 < 150 ms)")

        print(f"\nNuclei of the view (GET {base}/nuclei/?x0..y1), a {VIEW[0]} x {VIEW[1]} px viewer plus the page's "
              f"20 % margin on each side, random places, {args.repeat} requests:")
        for zoom in (0.5, 1.0, 2.0):
            w, h = int(VIEW[0] / zoom * 1.4), int(VIEW[1] / zoom * 1.4)
            times, cpu, counts, sizes = [], [], [], []
            for _ in range(args.repeat):
                x0, y0 = rng.randrange(0, args.side - w), rng.randrange(0, args.side - h)
                started_cpu = time.process_time()
                elapsed, response = timed(client, f"{base}/nuclei/?x0={x0}&y0={y0}&x1={x0 + w}&y1={y0 + h}")
                cpu.append(time.process_time() - started_cpu)
                data = response.json()
                times.append(elapsed)
                counts.append(data["count"])
                sizes.append(len(response.content))
            print(f"  zoom {zoom:.1f} (box {w} x {h}): {percentiles(times)}; {statistics.median(counts):.0f} nuclei, "
                  f"{statistics.median(sizes) / 1e6:.2f} MB per answer{'  (target: p95 < 400 ms at 0.5)' if zoom == 0.5 else ''}")
            print(f"      CPU time of the web process per request (without waiting for a busy CPU or the database): "
                  f"{percentiles(cpu)}")

        print("\nDensity (GET .../density/), zoomed out:")
        first, response = timed(client, f"{base}/density/")
        data = response.json()
        again = [timed(client, f"{base}/density/")[0] for _ in range(args.repeat)]
        print(f"  whole slide, {data['cols']} x {data['rows']} cells of {data['cell']} px: first {1000 * first:.0f} ms "
              f"(one GROUP BY over {data['total']} nuclei), then cached {percentiles(again)}")
        boxes = []
        for _ in range(min(args.repeat, 15)):
            w = h = args.side // 8
            x0, y0 = rng.randrange(0, args.side - w), rng.randrange(0, args.side - h)
            boxes.append(timed(client, f"{base}/density/?cell=64&x0={x0}&y0={y0}&x1={x0 + w}&y1={y0 + h}")[0])
        print(f"  a {args.side // 8} px square view in 64 px cells (uncached): {percentiles(boxes)}")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
        teardown_test_environment()
        shutil.rmtree(media, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
