"""`python -m mlcore train` reports the validation nuclei with test-time augmentation beside one view, as `infer`
and `evaluate` classify by default (mlcore.cli._report_validation; --no-tta: one view only)."""

import json
from types import SimpleNamespace

import numpy as np

from mlcore.cli import _report_validation
from mlcore.train import evaluate
from tests.mlcore.helpers import random_model, two_set_table


def test_validation_is_reported_with_tta_beside_one_view_and_written_to_metrics_json(tmp_path):
    table, label_sets = two_set_table(crop_size=64)   # plain RGB crops, as random_model takes
    model = random_model(label_sets).eval()   # input-sensitive: its flips answer differently
    val_rows = np.arange(len(table))[::3]
    one_view = evaluate(model, table, val_rows)
    result = SimpleNamespace(model=model, metrics=one_view, val_rows=val_rows, members=[])
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"label_sets": one_view}))
    said = []
    with_tta = _report_validation(result, table, True, path, said.append)

    expected = evaluate(model, table, val_rows, tta=True)
    assert with_tta == expected
    assert any(expected[name]["confusion"] != one_view[name]["confusion"] for name in one_view)
    written = json.loads(path.read_text())
    assert written["label_sets"] == json.loads(json.dumps(one_view))   # what training wrote stays
    assert written["label_sets_tta"] == json.loads(json.dumps(expected))
    heading = said.index("validation, test-time augmentation (8 views, as infer and evaluate classify by default):")
    assert said[0] == "validation, one view:" and heading == 1 + len(one_view)
    name = table.label_sets[0].name
    assert said[heading + 1].startswith(f"  {name}: n={expected[name]['n']} ")
    assert f"macro_f1={expected[name]['macro_f1']:.3f}" in said[heading + 1]

    # --no-tta: one view only, metrics.json untouched.
    path.write_text(json.dumps({"label_sets": one_view}))
    said = []
    assert _report_validation(result, table, False, path, said.append) == {}
    assert "label_sets_tta" not in json.loads(path.read_text())
    assert said[0] == "validation, one view:" and len(said) == 1 + len(one_view)
