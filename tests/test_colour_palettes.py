"""The colours a user tells classes and label sets apart by stay apart for colour-blind eyes.

Each palette is simulated under full protanopia, deuteranopia and tritanopia (Machado et al. 2009, as
colorspacious implements it) and every two of its first colours are compared in CAM02-UCS, where a
distance of about 10 or more is plainly different at a glance. The earlier class palette started with red
and green: 8.5 apart for a deuteranope, its first two classes.
"""

import itertools

import numpy as np
import pytest
from colorspacious import cspace_convert

from mlcore.types import default_colors
from webapp.datasets.queries import UNLABELLED_COLOR
from webapp.training.pages import PALETTE as CHART_COLOURS

VISION = [None, "protanomaly", "deuteranomaly", "tritanomaly"]


def rgb(colour) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) if isinstance(colour, str) else tuple(colour)


def seen(colour, vision):
    """The colour in CAM02-UCS as an eye with `vision` sees it (None: full colour vision)."""
    srgb = np.array(rgb(colour), dtype=float) / 255
    if vision:
        cvd = {"name": "sRGB1+CVD", "cvd_type": vision, "severity": 100}
        srgb = np.clip(cspace_convert(srgb, cvd, "sRGB1"), 0, 1)
    return cspace_convert(srgb, "sRGB1", "CAM02-UCS")


def closest_pair(colours) -> tuple[float, str, tuple, tuple]:
    return min((float(np.linalg.norm(seen(a, v) - seen(b, v))), v or "full colour vision", a, b)
               for a, b in itertools.combinations(colours, 2) for v in VISION)


def relative_luminance(colour) -> float:
    c = np.array(rgb(colour)) / 255
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


@pytest.mark.parametrize("classes", [4, 5, 6, 7])
def test_class_colours_and_the_unlabelled_grey_stay_apart_for_colour_blind_eyes(classes):
    """CoNSeP has 4 classes, PanNuke 5, NuCLS's main label set 4: their outlines and the grey of unlabelled
    nuclei are apart under every kind of colour blindness."""
    distance, vision, a, b = closest_pair(list(default_colors(classes)) + [UNLABELLED_COLOR])
    assert distance >= 11, f"{a} and {b} are {distance:.1f} apart for {vision}"


def test_class_colours_are_light_enough_to_see_on_stained_nuclei():
    """An outline crosses haematoxylin-dark nuclei: none of the first seven is darker than the middle grey."""
    for colour in default_colors(7):
        assert seen(colour, None)[0] >= 50, colour


def test_chart_lines_stay_apart_for_colour_blind_eyes_and_show_on_white():
    distance, vision, a, b = closest_pair(CHART_COLOURS[:5])
    assert distance >= 11, f"{a} and {b} are {distance:.1f} apart for {vision}"
    for colour in CHART_COLOURS[:5]:  # WCAG's 3:1 for graphics against the white plot
        assert (1.05) / (relative_luminance(colour) + 0.05) >= 3, colour
