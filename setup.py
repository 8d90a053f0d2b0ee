from setuptools import find_packages, setup

# Verified with torch 2.14.1 on Python 3.11 (README "Export").
EXPORT = ["onnx==1.23.2", "onnxruntime==1.31.1"]

setup(
    name="mdetr_d2",
    version="0.1.0",
    description="MDETR (modulated detection) as a Detectron2 plugin",
    # mdetr_synthetic: the synthetic example world, beside the library (it imports mdetr_d2).
    packages=find_packages(include=["mdetr_d2", "mdetr_d2.*", "mdetr_synthetic", "mdetr_synthetic.*"]),
    python_requires=">=3.10",
    # torch/torchvision and detectron2 are installed by scripts/setup.sh (see README): Detectron2 is not
    # on the package registry under its own name.
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "detectron2",
        "transformers>=4.40",
        "tokenizers",
        "timm>=0.9",
        "opencv-python-headless",
        "scipy",
        "pycocotools",
        "fvcore",
        "tqdm",
        "matplotlib",
    ],
    # `pip install mdetr_d2[export]`: ONNX export (tools/export_model.py --format onnx) and running
    # ONNX exports on CPU. The dev extra (scripts/setup.sh) includes it, so the suite tests export.
    extras_require={"export": EXPORT, "dev": ["pytest", *EXPORT]},
)
