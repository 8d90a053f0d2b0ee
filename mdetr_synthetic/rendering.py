"""Rendering a synthetic scene: its objects' polygons filled on the background."""
from __future__ import annotations

from PIL import Image, ImageDraw

from .scenes import Scene


def render_scene(scene: Scene) -> Image.Image:
    """Fill every object's polygon on the background (RGB, no anti-aliasing: masks match pixels)."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw.polygon(list(obj.polygon), fill=obj.fill)
    return image
