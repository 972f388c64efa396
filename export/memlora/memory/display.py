"""Memory text made safe for a terminal: stored text is model output and user input, untrusted.

Control characters (C0/C1, DEL) and Unicode bidirectional controls (a right-to-left override
can make ``rm`` read as ``mr`` on screen) are shown as ``\\uXXXX`` escapes; everything else,
emoji joiners included, is printed as it is.
"""
from __future__ import annotations

import unicodedata

_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(text: str) -> str:
    """``text`` with control and bidi-control characters escaped (``\\n`` included)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp in _BIDI or unicodedata.category(ch) == "Cc":
            out.append(f"\\u{cp:04x}")
        else:
            out.append(ch)
    return "".join(out)
