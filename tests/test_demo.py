"""tools/demo.py draws what an official-format checkpoint grounds."""
import cv2

_demo = __import__("tools.demo", fromlist=["main"]).main


def test_demo_with_official_checkpoint(official_fixtures, tmp_path, caplog):
    images = [str(official_fixtures / "images" / f"img{i}.png") for i in (0, 1)]
    rc = _demo(["--official", str(official_fixtures / "det_r18" / "checkpoint.pth"),
                "--text-encoder", str(official_fixtures / "tiny_roberta"),
                "--input", *images, "--caption", "a man in a red shirt holds a small dog .",
                "--output", str(tmp_path), "--opts", "MODEL.DEVICE", "cpu"])
    assert rc == 0
    for i, path in enumerate(images):
        drawn = cv2.imread(str(tmp_path / f"img{i}_mdetr.png"))
        assert drawn is not None and drawn.shape == cv2.imread(path).shape
        assert (drawn != cv2.imread(path)).any()  # something was drawn
