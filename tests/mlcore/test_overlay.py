import numpy as np
from PIL import Image

from mlcore.overlay import InstanceOutlines, draw_overlay, save_png
from mlcore.types import LabelSet

LABELS = LabelSet("demo", ("tumour", "immune"), ((255, 0, 0), (0, 0, 255)))
GREY = (200, 200, 200)


def _scene():
    image = np.full((60, 80, 3), 128, np.uint8)
    instance_map = np.zeros((60, 80), np.int32)
    instance_map[10:20, 10:20] = 1   # tumour
    instance_map[30:45, 40:60] = 2   # immune
    instance_map[5:9, 60:70] = 3     # unlabelled
    return image, instance_map, {1: 0, 2: 1}


def _has(region, color):
    return bool(np.all(region.reshape(-1, 3) == color, axis=1).any())


def test_outlines_take_their_class_colour_and_the_inside_is_untouched():
    image, instance_map, classes = _scene()
    picture = draw_overlay(image, instance_map, classes, LABELS)
    top = picture[:60, :80]
    assert tuple(top[10, 15]) == (255, 0, 0) and tuple(top[19, 10]) == (255, 0, 0)   # tumour boundary
    assert tuple(top[30, 50]) == (0, 0, 255)                                         # immune boundary
    assert tuple(top[5, 65]) == GREY                                                 # unlabelled boundary
    assert tuple(top[15, 15]) == (128, 128, 128) and tuple(top[50, 5]) == (128, 128, 128)
    assert not _has(top[:, :35], (0, 0, 255))  # no immune colour near the tumour nucleus
    np.testing.assert_array_equal(image, np.full((60, 80, 3), 128, np.uint8))  # input not modified


def test_legend_lists_every_class_below_the_image():
    image, instance_map, classes = _scene()
    picture = draw_overlay(image, instance_map, classes, LABELS)
    assert picture.shape[0] > 60 and picture.shape[1] >= 80
    legend = picture[60:]
    for color in [(255, 0, 0), (0, 0, 255), GREY]:
        assert _has(legend, color), color
    assert (legend < 100).all(axis=2).sum() > 50  # dark text drawn on the white margin
    # Without unlabelled nuclei there is no "unlabelled" swatch.
    no_unlabelled = draw_overlay(image, np.where(instance_map == 3, 0, instance_map), classes, LABELS)
    assert not _has(no_unlabelled[60:], GREY)
    assert draw_overlay(image, instance_map, classes, LABELS, legend=False).shape == image.shape


def test_without_label_set_everything_is_unlabelled(tmp_path):
    image, instance_map, _ = _scene()
    picture = draw_overlay(image, instance_map, {}, None, unlabelled_color=(0, 255, 0))
    assert tuple(picture[10, 15]) == (0, 255, 0) and tuple(picture[30, 50]) == (0, 255, 0)
    path = save_png(tmp_path / "out" / "overlay.png", picture)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)


def test_outlines_close_at_the_image_border_and_follow_the_thickness():
    instance_map = np.zeros((40, 40), np.int32)
    instance_map[0:10, 0:10] = 1        # touches the top-left corner
    instance_map[20:30, 20:30] = 2
    thin, thick = InstanceOutlines(instance_map, 1), InstanceOutlines(instance_map, 2)
    edge = np.zeros(40 * 40, bool)
    edge[thin.pixels] = True
    edge = edge.reshape(40, 40)
    assert edge[0, 5] and edge[5, 0] and edge[9, 5] and not edge[5, 5]   # closed along the image edge
    assert edge[20, 25] and edge[29, 25] and not edge[21, 25]            # one pixel wide
    assert not edge[19, 25] and not edge[15, 15]                          # never outside the nucleus
    thick_edge = np.zeros(40 * 40, bool)
    thick_edge[thick.pixels] = True
    assert thick_edge.reshape(40, 40)[21, 25] and not thick_edge.reshape(40, 40)[22, 25]
    assert thin.ids.tolist() == [1, 2] and set(thin.owners.tolist()) == {1, 2}
    assert len(thick.pixels) > len(thin.pixels)


def test_one_outline_pass_draws_every_label_set_like_draw_overlay():
    image, instance_map, classes = _scene()
    other = LabelSet("other", ("a", "b", "c"), ((0, 255, 0), (255, 0, 255), (0, 255, 255)))
    outlines = InstanceOutlines(instance_map)
    for label_set, mapping in ((LABELS, classes), (other, {1: 2, 2: 2, 3: 0})):
        ids = np.array(list(mapping)), np.array(list(mapping.values()))
        np.testing.assert_array_equal(outlines.draw(image, *ids, label_set),
                                      draw_overlay(image, instance_map, mapping, label_set))
    # A class index outside the label set is drawn as unlabelled, not as a wrong colour or an error.
    picture = outlines.draw(image, np.array([1]), np.array([7]), LABELS, legend=False)
    assert tuple(picture[10, 15]) == GREY


def test_drawing_label_sets_in_turn_into_one_buffer_leaves_nothing_of_the_last_one():
    # Each picture of draw_each repaints the outlines and the legend in a buffer shared with the others: the
    # last set's colours, a longer legend or a wider one must not show through in the next.
    image, instance_map, classes = _scene()
    wide = LabelSet("wide", ("a class name far wider than this little image", "b"), ((0, 255, 0), (9, 9, 9)))
    three = LabelSet("three", ("a", "b", "c"), ((0, 255, 255), (255, 0, 255), (255, 255, 0)))
    ids = np.array([1, 2, 3])
    classifications = [(ids, np.array([0, 1, 1]), wide), (ids[:2], np.array([1, 0]), LABELS),
                       (ids, np.array([2, 2, 0]), three), (ids, np.array([0, 0, 0]), None)]
    outlines = InstanceOutlines(instance_map)
    for legend in (True, False):
        alone = [outlines.draw(image, *item, legend=legend) for item in classifications]
        together = [picture.copy() for picture in outlines.draw_each(image, classifications, legend=legend)]
        for one, other in zip(alone, together):
            np.testing.assert_array_equal(one, other)
        bgr = [picture.copy() for picture in outlines.draw_each(image, classifications, legend=legend, bgr=True)]
        for one, other in zip(alone, bgr):
            np.testing.assert_array_equal(one[:, :, ::-1], other)
    assert alone[0].shape[1] == 80 and together[0].shape[1] == 80  # (legend=False: the image's own width)
    wide_legend = outlines.draw(image, *classifications[0])
    assert wide_legend.shape[1] > outlines.draw(image, *classifications[1]).shape[1] > 80
    assert tuple(wide_legend[10, 15]) == (0, 255, 0) and tuple(wide_legend[10, 100]) == (255, 255, 255)
