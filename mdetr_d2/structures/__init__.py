"""Bottom layer of mdetr_d2: plain text/structure helpers shared by data, modeling and evaluation.

Imports only the standard library, torch, transformers and Detectron2, never another mdetr_d2
package.
"""
from .class_names import clean_category_name

__all__ = ["clean_category_name"]
