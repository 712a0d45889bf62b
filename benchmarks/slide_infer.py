"""Slide inference speed and memory: ``infer_slide`` over a benchmark slide against ``infer_image`` on a tile.

    .venv/bin/python benchmarks/slide_infer.py [--nuclei 50000] [--work /tmp/slide_infer_bench] [--threads 2]
                                               [--checkpoint DIR/model.pt] [--device cpu|cuda]

Builds (once; reused while its manifest says it has enough nuclei) a benchmark slide of real CoNSeP tiles
repeated (``python -m mlcore make-slide --nuclei N``, in a subprocess so that its memory is not counted
here), with its QuPath GeoJSON. The model is the default CPU configuration of ``benchmarks/infer_speed.py``
(four label sets, ``small`` width 16, correlation branch on; random weights: speed does not depend on them)
or a checkpoint. Prints nuclei/s of:

- ``infer_image`` on a 1000 x 1000 tile of real CoNSeP tiles (crops cut from the tile in memory, predict);
- streaming the slide's GeoJSON alone (ijson, rasterise, outline), the import's reading cost;
- ``infer_slide`` end to end: the GeoJSON streamed, a region read per batch at the model's scale, outlines
  rasterised, crops cut, predict; predictions consumed and dropped (the CLI writes them as GeoJSON);

and the process's peak RSS after a tenth of the nuclei and after all of them (flat = bounded memory).
Best of ``--repeats`` for the tile, one pass for the slide; ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.config import TrainConfig  # noqa: E402
from mlcore.infer import infer_image, infer_slide  # noqa: E402
from mlcore.model import CrossTrainedModel  # noqa: E402
from mlcore.slide_fixtures import build_test_slide  # noqa: E402
from mlcore.slide_nuclei import iter_geojson_nuclei  # noqa: E402
from mlcore.slides import open_slide  # noqa: E402
from mlcore.types import LabelSet  # noqa: E402


def default_model() -> CrossTrainedModel:
    sizes = {"consep": 4, "pannuke": 5, "pannuke_breast_binary": 2, "nucls": 4}
    label_sets = [LabelSet(name, tuple(f"{name}_{i}" for i in range(n))) for name, n in sizes.items()]
    model = CrossTrainedModel(label_sets, "small", {"width": 16}, TrainConfig().crop_spec)  # the default crops
    model.use_correlation.fill_(True)
    return model.eval()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark_slide(shared_data: Path, work: Path, nuclei: int) -> dict[str, Path]:
    out = work / f"slide_{nuclei}"
    manifest = out / "benchmark_manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text())["nuclei"] >= nuclei):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlcore", "make-slide", "--shared-data", str(shared_data), "--out",
                        str(out), "--nuclei", str(nuclei)], cwd=ROOT, check=True)
        print(f"built the benchmark slide in {time.perf_counter() - started:.0f}s")
    return {"slide": out / "benchmark.tif", "geojson": out / "benchmark.geojson", "manifest": manifest}


def tile_speed(model, shared_data: Path, repeats: int, device) -> tuple[float, int]:
    import tifffile

    with tempfile.TemporaryDirectory() as folder:
        paths = build_test_slide(shared_data, Path(folder), grid=(4, 4))
        with open_slide(paths["slide"]) as slide:
            image = slide.read_region(0, 0, 0, 1000, 1000)
        mask = tifffile.imread(paths["mask"])[:1000, :1000].astype(np.int64)
    infer_image(model, image, mask, device=device)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = infer_image(model, image, mask, device=device)
        times.append(time.perf_counter() - started)
    count = len(result.geometry.ids)
    return count / min(times), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nuclei", type=int, default=50_000)
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slide_infer_bench")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    paths = benchmark_slide(args.shared_data, args.work, args.nuclei)
    manifest = json.loads(paths["manifest"].read_text())
    model = load_checkpoint(args.checkpoint, args.device).model if args.checkpoint else default_model().to(args.device)
    print(f"slide {manifest['width']} x {manifest['height']} px, {manifest['nuclei']} nuclei, "
          f"{paths['geojson'].stat().st_size / 2**20:.0f} MiB of GeoJSON; model {model.backbone_name} "
          f"{model.backbone_kwargs}, {len(model.label_sets)} label sets; {args.threads} threads, {args.device}")
    print(f"peak RSS after loading the model: {peak_rss_mb():.0f} MB")

    tile_rate, tile_count = tile_speed(model, args.shared_data, args.repeats, args.device)
    print(f"infer_image, 1000 x 1000 tile ({tile_count} nuclei):  {tile_rate:8.0f} nuclei/s")

    started = time.perf_counter()
    parsed = sum(1 for _ in iter_geojson_nuclei(paths["geojson"]))
    parse_s = time.perf_counter() - started
    print(f"GeoJSON streamed alone ({parsed} nuclei):          {parsed / parse_s:8.0f} nuclei/s ({parse_s:.1f}s)")

    tenth = max(8 * args.batch_size, manifest["nuclei"] // 10)  # full chunks and batches already
    with open_slide(paths["slide"]) as slide:
        started = time.perf_counter()
        done = 0
        for batch in infer_slide(model, slide, itertools.islice(iter_geojson_nuclei(paths["geojson"]), tenth),
                                 batch_size=args.batch_size, device=args.device, read_ahead=True):
            done += len(batch.nuclei)
        print(f"peak RSS after {done} nuclei: {peak_rss_mb():.0f} MB")
        started = time.perf_counter()
        done = batches = 0
        for batch in infer_slide(model, slide, iter_geojson_nuclei(paths["geojson"]), batch_size=args.batch_size,
                                 device=args.device, read_ahead=True):
            done += len(batch.nuclei)
            batches += 1
        slide_s = time.perf_counter() - started
    print(f"peak RSS after {done} nuclei: {peak_rss_mb():.0f} MB")
    slide_rate = done / slide_s
    print(f"infer_slide, end to end ({done} nuclei, {batches} regions): {slide_rate:8.0f} nuclei/s ({slide_s:.1f}s)")
    print(f"ratio infer_slide / infer_image: {slide_rate / tile_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
