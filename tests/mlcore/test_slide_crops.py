"""Training crops cut from a slide (mlcore.infer.slide_crops) are the crops of the same pixels as a tile: a
model trains on a slide's nuclei as it sees a tile's and as it classifies the slide; they are cached by the
slide, the crops' settings and the nuclei (one entry per slide), and the cutting can be cancelled."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.crops import CropSpec
from mlcore.infer import slide_crops
from mlcore.slide_nuclei import SlideNucleus
from mlcore.slides import open_slide, write_pyramidal_tiff
from mlcore.synthetic import generate_tile
from mlcore.types import Cancelled
from mlcore.writers import geometry_and_outlines


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 768 x 512 tissue as a pyramidal TIFF at the models' 0.25 um/px, with its instance map and nuclei."""
    image, instances, _ = generate_tile(np.random.default_rng(5), size=(512, 768), n_nuclei=120)
    path = write_pyramidal_tiff(tmp_path_factory.mktemp("slide") / "tissue.tif", image, mpp=0.25, tile=256,
                                min_level_size=128)
    geometry, outlines = geometry_and_outlines(instances)
    nuclei = [SlideNucleus(outline=np.asarray(outline, np.int32).reshape(-1, 2),
                           bbox=(int(g["x0"]), int(g["y0"]), int(g["x1"]), int(g["y1"])),
                           centroid=(float(g["cx"]), float(g["cy"])), area=int(g["area"]))
              for g, outline in zip(geometry, outlines)]
    return path, image, instances, nuclei, geometry["id"].astype(np.int64)


@pytest.mark.parametrize("spec", [CropSpec(), CropSpec(context_view=2)], ids=["one view", "wider view"])
def test_the_crops_of_a_slide_are_those_of_its_pixels_as_a_tile(slide, spec):
    path, image, instances, nuclei, ids = slide
    tile_crops, geometry = spec.cut(image, instances.astype(np.int64))
    assert geometry.ids.tolist() == ids.tolist()
    with open_slide(path) as opened:
        # Small regions: most nuclei are cut from a region that is not the whole slide, in another order.
        order = np.random.default_rng(0).permutation(len(nuclei))
        crops = slide_crops(spec, opened, [nuclei[i] for i in order], region_size=128, batch_size=16)
    assert crops.shape == (len(nuclei), spec.size, spec.size, spec.channels)
    np.testing.assert_array_equal(crops, tile_crops[order])


def test_the_crops_are_cached_by_slide_settings_and_nuclei(slide, tmp_path):
    path, _, _, nuclei, _ = slide
    spec = CropSpec()
    calls = []
    with open_slide(path) as opened:
        first = slide_crops(spec, opened, nuclei, cache_dir=tmp_path, cache_key="slide-a", batch_size=32,
                            progress=lambda done, total: calls.append(done))
        assert calls[-1] == len(nuclei) and len(calls) > 1   # region by region
        assert len(list(tmp_path.glob("crops-slide-*.npy"))) == 1
        calls.clear()
        again = slide_crops(spec, opened, nuclei, cache_dir=tmp_path, cache_key="slide-a", batch_size=32,
                            progress=lambda done, total: calls.append(done))
        assert calls == [len(nuclei)]                         # read from the cache, no region cut
        np.testing.assert_array_equal(again, first)
        # Another slide is another entry; other nuclei or other crops of a slide replace its entry.
        slide_crops(spec, opened, nuclei, cache_dir=tmp_path, cache_key="slide-b", batch_size=32)
        assert len(list(tmp_path.glob("crops-slide-*.npy"))) == 2
        fewer = slide_crops(spec, opened, nuclei[:-1], cache_dir=tmp_path, cache_key="slide-a", batch_size=32)
        np.testing.assert_array_equal(fewer, first[:-1])
        assert len(list(tmp_path.glob("crops-slide-*.npy"))) == 2
        calls.clear()
        slide_crops(spec, opened, nuclei, cache_dir=tmp_path, cache_key="slide-a", batch_size=32,
                    progress=lambda done, total: calls.append(done))
        assert len(calls) > 1                                   # cut again: its entry was replaced
    assert len(list(tmp_path.glob("crops-slide-*.npy"))) == 2
    assert not list(tmp_path.glob(".*"))                       # no partial file left


def test_cutting_the_crops_can_be_cancelled(slide, tmp_path):
    path, _, _, nuclei, _ = slide
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with open_slide(path) as opened, pytest.raises(Cancelled):
        slide_crops(CropSpec(), opened, nuclei, batch_size=8, cache_dir=tmp_path, cache_key="x",
                    should_stop=should_stop)
    assert not list(tmp_path.iterdir())   # nothing cached from a cancelled cut
