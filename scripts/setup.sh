#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, no GPU needed): a virtual environment in .venv with
# torch/torchvision, Detectron2 (patched v0.6, see tools/install_detectron2.py) and mdetr_d2 (editable).
# Safe to re-run: finished steps are skipped by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python tools/install_detectron2.py
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -e ".[dev]"
# lvis' own requirements pull the non-headless OpenCV beside ours; its code needs nothing more.
.venv/bin/pip install -q --disable-pip-version-check --no-deps lvis==0.5.3
