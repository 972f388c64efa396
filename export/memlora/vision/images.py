"""Seeded VQA images with single-word answers, drawn with NumPy (no Pillow, same bytes everywhere).

Each sample is one ``tile x tile`` RGB canvas plus a question and its one-word answer, in five
kinds: ``colour`` (of the one shape), ``shape``, ``count`` (1-4 shapes), ``position`` (left,
right, top, bottom) and ``word`` (a written 3-4 letter word in a 3x5 pixel font).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 210, 30),
           "purple": (140, 50, 180), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = ("one", "two", "three", "four")
POSITIONS = ("left", "right", "top", "bottom")
WORDS = ("CAT", "DOG", "SUN", "MAP", "BOX", "HAT", "KEY", "CUP", "FISH", "BIRD", "TREE", "BOAT")
KINDS = ("colour", "shape", "count", "position", "word")
QUESTIONS = {"colour": "What colour is the shape?", "shape": "What shape is in the picture?",
             "count": "How many shapes are there?", "position": "Where is the shape?",
             "word": "What word is written in the picture?"}
# 3x5 glyphs, rows top to bottom, 3 bits each (MSB = left column).
_FONT = {"A": (2, 5, 7, 5, 5), "B": (6, 5, 6, 5, 6), "C": (3, 4, 4, 4, 3), "D": (6, 5, 5, 5, 6),
         "E": (7, 4, 6, 4, 7), "F": (7, 4, 6, 4, 4), "G": (3, 4, 5, 5, 3), "H": (5, 5, 7, 5, 5),
         "I": (7, 2, 2, 2, 7), "K": (5, 5, 6, 5, 5), "M": (5, 7, 7, 5, 5), "O": (2, 5, 5, 5, 2),
         "P": (6, 5, 6, 4, 4), "R": (6, 5, 6, 5, 5), "S": (3, 4, 2, 1, 6), "T": (7, 2, 2, 2, 2),
         "U": (5, 5, 5, 5, 7), "N": (5, 7, 7, 7, 5), "X": (5, 5, 2, 5, 5), "Y": (5, 5, 2, 2, 2)}


@dataclass(frozen=True)
class VqaSample:
    image: np.ndarray  # uint8 [tile, tile, 3]
    kind: str
    question: str
    answer: str


def _shape_mask(kind: str, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if kind == "circle":
        return (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    if kind == "square":
        return (np.abs(y - cy) <= r * 0.85) & (np.abs(x - cx) <= r * 0.85)
    # triangle, apex up
    top, bottom = cy - r, cy + r
    half = (y - top) / (2 * r) * r
    return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half)


def _draw_word(canvas: np.ndarray, word: str, colour) -> None:
    size = canvas.shape[0]
    scale = max(1, size // (4 * len(word) + 2))
    width = (4 * len(word) - 1) * scale
    x0, y0 = (size - width) // 2, (size - 5 * scale) // 2
    for i, ch in enumerate(word):
        for row, bits in enumerate(_FONT[ch]):
            for col in range(3):
                if bits >> (2 - col) & 1:
                    ys, xs = y0 + row * scale, x0 + (4 * i + col) * scale
                    canvas[ys:ys + scale, xs:xs + scale] = colour


def make_sample(seed: int, tile: int, kind: str | None = None) -> VqaSample:
    """One seeded sample: the same ``(seed, tile, kind)`` always gives the same bytes."""
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    bg = np.array([245, 245, 240], np.uint8) - rng.integers(0, 20, 3).astype(np.uint8)
    canvas = np.broadcast_to(bg, (tile, tile, 3)).copy()
    names = list(COLOURS)
    colour = names[int(rng.integers(len(names)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    r = tile * 0.16
    if kind == "word":
        answer = WORDS[int(rng.integers(len(WORDS)))]
        _draw_word(canvas, answer, COLOURS[colour])
        return VqaSample(canvas, kind, QUESTIONS[kind], answer.lower())
    if kind == "count":
        n = int(rng.integers(1, 5))
        cells = rng.permutation(4)[:n]
        for c in cells:
            cy, cx = (0.27 + 0.46 * (c // 2)) * tile, (0.27 + 0.46 * (c % 2)) * tile
            canvas[_shape_mask(shape, cy, cx, r * 0.8, tile)] = COLOURS[colour]
        return VqaSample(canvas, kind, QUESTIONS[kind], COUNT_WORDS[n - 1])
    if kind == "position":
        where = POSITIONS[int(rng.integers(len(POSITIONS)))]
        cy, cx = {"left": (0.5, 0.22), "right": (0.5, 0.78), "top": (0.22, 0.5), "bottom": (0.78, 0.5)}[where]
        canvas[_shape_mask(shape, cy * tile, cx * tile, r, tile)] = COLOURS[colour]
        return VqaSample(canvas, kind, QUESTIONS[kind], where)
    jitter = rng.uniform(-0.08, 0.08, 2) * tile
    canvas[_shape_mask(shape, tile / 2 + jitter[0], tile / 2 + jitter[1], r * 1.4, tile)] = COLOURS[colour]
    return VqaSample(canvas, kind, QUESTIONS[kind], colour if kind == "colour" else shape)


def make_samples(n: int, tile: int, seed: int = 0) -> list[VqaSample]:
    """``n`` samples cycling through the five kinds."""
    return [make_sample(seed * 1000 + i, tile, KINDS[i % len(KINDS)]) for i in range(n)]


def png_bytes(image: np.ndarray) -> bytes:
    """A minimal RGB PNG (8-bit, no filter), deterministic for the same pixels."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
