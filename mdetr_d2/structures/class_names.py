"""Category names as MDETR reads them: the official LVIS cleaning (reference §4.5, §5.10)."""
from __future__ import annotations

import re

_PARENTHESES = re.compile(r"\(.*\)")


def clean_category_name(name: str) -> str:
    """A category name turned into caption text exactly as the official LVIS code does.

    Text from the first "(" to the last ")" is removed, "_" becomes a space and each pair of
    spaces becomes one ("bow_(weapon)" -> "bow ", "hot_dog" -> "hot dog"). Leading or trailing
    spaces are kept, as officially (the class prompts of the released LVIS models were encoded
    with them); strip the result where a clean phrase is wanted.
    """
    name = _PARENTHESES.sub("", name)
    name = name.replace("_", " ")
    return name.replace("  ", " ")
