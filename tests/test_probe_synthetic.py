"""tools/probe_synthetic.py: linear probes of what a synthetic-world MDETR's features know."""
import torch

from mdetr_synthetic import generate_synthetic_dataset

_tool = __import__("tools.probe_synthetic", fromlist=["main"])


def test_linear_probe_reads_an_encoded_label_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (400,), generator=g)
    noise = torch.randn(400, 32, generator=g)
    encoded = noise.clone()
    encoded[:, :6] += 5 * torch.nn.functional.one_hot(labels, 6)
    accuracy = _tool.linear_probe_accuracy
    assert accuracy(encoded[:300], labels[:300], encoded[300:], labels[300:], 6) > 0.95
    assert accuracy(noise[:300], labels[:300], noise[300:], labels[300:], 6) < 0.35


def test_probe_tool_on_a_tiny_world(tmp_path, capsys):
    world = tmp_path / "world"
    generate_synthetic_dataset(world, num_train=10, num_val=8, num_test=1, progress=False)
    results = _tool.main(["--data-root", str(world), "--weights", "random", "--train-scenes", "10",
                          "--val-scenes", "8", "OUTPUT_DIR", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    for feature in _tool.FEATURES:
        assert feature in printed
        if results[feature] is None:  # an untrained model may box no object
            assert feature == "decoder state" and "n/a" in printed
            continue
        assert set(results[feature]) == {"colour", "shape", "size"}
        assert all(0.0 <= v <= 1.0 for v in results[feature].values())
    assert 0.0 <= results["boxed_fraction_val"] <= 1.0
    assert "1 = indistinguishable" in printed
    for attribute in ("colour", "shape"):
        stages = results["word similarity"][attribute]
        assert set(stages) == set(_tool.TEXT_STAGES)
        # Random weights keep distinct words apart.
        assert all(-1.0 <= v < 0.99 for v in stages.values()), stages


def test_mean_pairwise_cosine():
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])
    assert abs(_tool.mean_pairwise_cosine(same) - 1.0) < 1e-6
    assert abs(_tool.mean_pairwise_cosine(torch.eye(4))) < 1e-6
    assert abs(_tool.mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) + 1.0) < 1e-6


def test_probe_tool_reads_the_weights_of_a_checkpoint(tmp_path, capsys):
    """--weights FILE goes through the evaluation loader: the same file gives the same probes."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from mdetr_d2 import add_mdetr_config

    world = tmp_path / "world"
    generate_synthetic_dataset(world, num_train=10, num_val=8, num_test=1, progress=False)
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file("configs/synthetic/mdetr_synthetic.yaml")
    cfg.MODEL.MDETR.TEXT_ENCODER.NAME = str(world / "text_encoder")
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    args = ["--data-root", str(world), "--weights", str(weights), "--train-scenes", "10",
            "--val-scenes", "8", "OUTPUT_DIR", str(tmp_path / "out")]
    assert _tool.main(args) == _tool.main(args)
