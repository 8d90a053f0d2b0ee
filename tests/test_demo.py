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
        drawn, original = cv2.imread(str(tmp_path / f"img{i}_mdetr.png")), cv2.imread(path)
        # Small images are drawn enlarged (readable labels), keeping the aspect ratio.
        assert drawn is not None and max(drawn.shape[:2]) == 480
        assert abs(drawn.shape[1] / drawn.shape[0] - original.shape[1] / original.shape[0]) < 0.01
        enlarged = cv2.resize(original, (drawn.shape[1], drawn.shape[0]))
        assert (cv2.absdiff(drawn, enlarged) > 60).mean() > 0.001  # boxes and labels were drawn
