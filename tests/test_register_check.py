"""`python datasets/register.py --check --only NAME` explains each problem in the user's terms."""
import importlib.util
import json
from pathlib import Path

import pytest

REGISTER = Path(__file__).resolve().parents[1] / "datasets" / "register.py"


def _register_main():
    spec = importlib.util.spec_from_file_location("mdetr_register_script", REGISTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


GOOD_IMAGE = {"id": 0, "file_name": "0001.png", "height": 48, "width": 64,
              "caption": "the cat on the left"}
GOOD_ANN = {"id": 0, "image_id": 0, "bbox": [2, 3, 20, 18], "iscrowd": 0, "category_id": 1,
            "tokens_positive": [[0, 7]]}


def _dataset(tmp_path, name, image=None, ann=None, make_image=True):
    data = {"images": [dict(GOOD_IMAGE, **(image or {}))],
            "annotations": [dict(GOOD_ANN, **(ann or {}))],
            "categories": [{"id": 1, "name": "object"}]}
    folder = tmp_path / name
    (folder / "images").mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps(data))
    if make_image:
        from PIL import Image

        Image.new("RGB", (64, 48)).save(folder / "images" / "0001.png")
    return ["--add", name, str(folder / "train.json"), str(folder / "images")]


@pytest.mark.parametrize("name, image, ann, field, expected, example", [
    ("span_outside", None, {"tokens_positive": [[0, 40]]}, "'tokens_positive'",
     "character spans of the record's caption", '"tokens_positive": [[0, 7]]'),
    ("bad_box", None, {"bbox": [2, 3, 20]}, "'bbox'", "[x, y, width, height] in pixels",
     '"bbox": [20, 50, 200, 180]'),
    ("no_caption", {"caption": ""}, None, "'caption'", "a non-empty string",
     '"caption": "the cat on the left"'),
])
def test_format_errors_are_explained(tmp_path, capsys, name, image, ann, field, expected, example):
    add = _dataset(tmp_path, f"usercheck_{name}", image, ann)
    assert _register_main()(["--check", "--only", f"usercheck_{name}", *add]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if f"usercheck_{name}" in line)
    assert "BROKEN" in line and "train.json" in line and "id=0" in line and field in line
    explanation = out.split(line, 1)[1].splitlines()
    assert expected in next(x for x in explanation if x.strip().startswith("expected:"))
    assert example in next(x for x in explanation if x.strip().startswith("example:"))


def test_missing_image_and_tokenless_box_are_explained(tmp_path, capsys, tiny_text_encoder):
    add = _dataset(tmp_path, "usercheck2_noimage", make_image=False)
    add += _dataset(tmp_path, "usercheck2_space", ann={"tokens_positive": [[3, 4]]})
    assert _register_main()(["--check", "--only", "usercheck2_", "--tokenizer", tiny_text_encoder,
                             *add]) == 0
    out = capsys.readouterr().out
    assert "missing image" in out and "expected: the image file at <image root>/<file_name>" in out
    assert "tied to no token (tokens_positive [[3, 4]])" in out
    assert 'example:  "tokens_positive": [[0, 7]] for "the cat"' in out
    assert "0/2 datasets present and valid" in out


def test_a_valid_dataset_passes(tmp_path, capsys):
    add = _dataset(tmp_path, "usercheck_good")
    assert _register_main()(["--check", "--only", "usercheck_good", *add]) == 0
    out = capsys.readouterr().out
    assert "[present] usercheck_good" in out and "1/1 datasets present and valid" in out
