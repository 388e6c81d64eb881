"""The toy world: subjects, appearances, subject-entangled concepts and a deterministic renderer.

    from lego_inversion.toyworld.render import Scene, render
    img = render(Scene(subject="cube", appearance="checkered", concept="melted", variant=1, seed=3))  # PIL 64x64

Every subject is a small cartoon character (a body shape with two eyes and two stick arms), so that the
face-state and pose concepts apply to all of them. A concept changes the subject itself (its outline, colour,
eyes, arms or number), never only an overlay, so subject and concept are entangled as in §3 of Lego.
Each concept has a *generic* variant 0, which training captions name, and *personalized* variants >= 1, which
appear in training images whose captions do not mention them (the premise of Fig. 2 of Lego).
Rendering is 2x supersampled with PIL and downsampled; all randomness comes from `Scene.seed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # output image size (pixels)
_SS = 2  # supersampling factor
_C = SIZE * _SS  # canvas size while drawing

SUBJECTS = ("cube", "ball", "pyramid", "star", "heart", "bear")
PLURALS = {"cube": "cubes", "ball": "balls", "pyramid": "pyramids", "star": "stars", "heart": "hearts",
           "bear": "bears"}
COLOURS = {
    "red": (214, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 50, 180),
}
APPEARANCES = (*COLOURS, "checkered")  # "checkered": a multicolour 3x3 grid, the toy Rubik's cube look
_GRID = [(214, 40, 40), (250, 250, 250), (40, 80, 220), (240, 200, 30), (40, 160, 60), (250, 130, 20),
         (40, 80, 220), (250, 130, 20), (214, 40, 40)]
# concept -> number of variants (variant 0 = generic, named by captions; >= 1 = personalized, never named)
CONCEPTS = {"melted": 2, "frozen": 2, "crumpled": 2, "sleeping": 2, "arms_raised": 2, "count": 2}
CONCEPT_NAMES = ("none", *CONCEPTS)
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
VARIANT_DESCRIPTIONS = {
    ("melted", 0): "drips running straight down into a puddle",
    ("melted", 1): "slumped sideways in a wavy lean, no puddle",
    ("frozen", 0): "pale icy tint inside a translucent ice block",
    ("frozen", 1): "frosted white with icicles hanging below, no block",
    ("crumpled", 0): "jagged outline with dark creases",
    ("crumpled", 1): "squeezed narrow into accordion folds",
    ("sleeping", 0): "eyes closed as straight lines",
    ("sleeping", 1): "eyes closed as arcs, whole body tilted (dozing)",
    ("arms_raised", 0): "both arms raised in a V",
    ("arms_raised", 1): "one arm raised (waving), the other down",
    ("count", 0): "copies side by side in a row",
    ("count", 1): "copies piled in a stack",
}
_INK = (40, 40, 40)
_BG = (236, 232, 222)


@dataclass(frozen=True)
class Scene:
    """One image of the toy world; `render(scene)` is a pure function of it."""

    subject: str = field(metadata={"help": f"one of {', '.join(SUBJECTS)}"})
    appearance: str = field(default="red", metadata={"help": f"one of {', '.join(APPEARANCES)}"})
    concept: str = field(default="none", metadata={"help": f"one of {', '.join(CONCEPT_NAMES)}"})
    variant: int = field(default=0, metadata={"help": "0: the generic variant (captions name it); 1: personalized"})
    count: int = field(default=1, metadata={"help": "copies of the subject: 2-5 with concept count, else 1"})
    seed: int = field(default=0, metadata={"help": "all randomness of the drawing"})

    def __post_init__(self) -> None:
        if self.subject not in SUBJECTS:
            raise ValueError(f"subject {self.subject!r} is not one of {SUBJECTS}")
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance {self.appearance!r} is not one of {APPEARANCES}")
        if self.concept not in CONCEPT_NAMES:
            raise ValueError(f"concept {self.concept!r} is not one of {CONCEPT_NAMES}")
        n_var = CONCEPTS.get(self.concept, 1)
        if not 0 <= self.variant < n_var:
            raise ValueError(f"variant {self.variant} of {self.concept!r} must be in [0, {n_var})")
        if (self.concept == "count") != (self.count > 1) or not 1 <= self.count <= 5:
            raise ValueError(f"count {self.count}: use 2..5 with concept 'count' and 1 otherwise")


# ----------------------------------------------------------------------------------------------- drawing
def _body_polygon(subject: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of the subject's body as a polygon (a circle is a 40-gon)."""
    if subject == "cube":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if subject in ("ball", "bear"):
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40, False)]
    if subject == "pyramid":
        return [(cx, cy - 1.25 * r), (cx + 1.2 * r, cy + r), (cx - 1.2 * r, cy + r)]
    if subject == "star":
        pts = []
        for k in range(10):
            rad = 1.25 * r if k % 2 == 0 else 0.55 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + 0.1 * r + rad * math.sin(a)))
        return pts
    if subject == "heart":
        pts = []
        for t in np.linspace(0, 2 * math.pi, 48, False):
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 15.0, cy - r * y / 15.0 + 0.1 * r))
        return pts
    raise ValueError(subject)


def _fill_layer(appearance: str, box: tuple[float, float, float, float]) -> Image.Image:
    """An RGB layer with the appearance: a flat colour, or the 3x3 multicolour grid over the body's box."""
    layer = Image.new("RGB", (_C, _C), COLOURS.get(appearance, (0, 0, 0)))
    if appearance == "checkered":
        d = ImageDraw.Draw(layer)
        x0, y0, x1, y1 = box
        w, h = (x1 - x0) / 3, (y1 - y0) / 3
        for i in range(3):
            for j in range(3):
                d.rectangle([x0 + j * w, y0 + i * h, x0 + (j + 1) * w, y0 + (i + 1) * h], fill=_GRID[3 * i + j])
                d.rectangle([x0 + j * w, y0 + i * h, x0 + (j + 1) * w, y0 + (i + 1) * h], outline=_INK,
                            width=2)
    return layer


def _sprite(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """One copy of the subject (RGBA, canvas-sized, centred) with the concept applied."""
    c, v = scene.concept, scene.variant
    cx, cy, r = _C / 2, _C / 2 + (-10 if (c, v) == ("melted", 0) else 4), 30.0
    poly = _body_polygon(scene.subject, cx, cy, r)
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    box = (min(xs), min(ys), max(xs), max(ys))
    sprite = Image.new("RGBA", (_C, _C), (0, 0, 0, 0))
    d = ImageDraw.Draw(sprite)
    # arms (behind the body): shoulders at the body's sides
    arm_w = 5
    lsh, rsh = (cx - 0.8 * r, cy + 0.1 * r), (cx + 0.8 * r, cy + 0.1 * r)
    down_l, down_r = (cx - 1.55 * r, cy + 0.75 * r), (cx + 1.55 * r, cy + 0.75 * r)
    up_l, up_r = (cx - 1.45 * r, cy - 1.05 * r), (cx + 1.45 * r, cy - 1.05 * r)
    hands = {"arms_raised": [(up_l, up_r), (up_l, down_r)]}.get(c, [(down_l, down_r)] * 2)[v]
    for sh, hand in ((lsh, hands[0]), (rsh, hands[1])):
        d.line([sh, hand], fill=_INK, width=arm_w)
        d.ellipse([hand[0] - 4, hand[1] - 4, hand[0] + 4, hand[1] + 4], fill=_INK)
    if scene.subject == "bear":  # ears
        for ex in (cx - 0.72 * r, cx + 0.72 * r):
            d.ellipse([ex - 0.38 * r, cy - 1.08 * r, ex + 0.38 * r, cy - 0.32 * r], fill=_INK)
    # body: appearance fill masked by the polygon, dark outline
    mask = Image.new("L", (_C, _C), 0)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    fill = _fill_layer(scene.appearance, box)
    if c == "frozen":  # the body's own colour turns icy (v0) or frosted white (v1)
        ice = np.array((170, 215, 245) if v == 0 else (235, 245, 252), dtype=np.float32)
        f = np.asarray(fill, dtype=np.float32)
        fill = Image.fromarray((0.45 * f + 0.55 * ice).astype(np.uint8))
    sprite.paste(fill, (0, 0), mask)
    d.polygon(poly, outline=_INK, width=3)
    # eyes
    ey = cy + (0.35 * r if scene.subject == "pyramid" else 0.0) - 0.1 * r
    for ex in (cx - 0.38 * r, cx + 0.38 * r):
        if c == "sleeping" and v == 0:
            d.line([(ex - 7, ey), (ex + 7, ey)], fill=_INK, width=4)
        elif c == "sleeping":
            d.arc([ex - 7, ey - 7, ex + 7, ey + 5], start=20, end=160, fill=_INK, width=4)
        else:
            d.ellipse([ex - 8, ey - 8, ex + 8, ey + 8], fill=(255, 255, 255), outline=_INK, width=2)
            d.ellipse([ex - 3.5, ey - 3.5, ex + 3.5, ey + 3.5], fill=_INK)
    return _apply_shape_concept(sprite, scene, rng, box)


def _warp(img: Image.Image, src_x: np.ndarray, src_y: np.ndarray) -> Image.Image:
    """Inverse warp (nearest neighbour): output pixel (y, x) takes input pixel (src_y, src_x)."""
    a = np.asarray(img)
    sx, sy = np.rint(src_x).astype(int), np.rint(src_y).astype(int)
    ok = (sx >= 0) & (sx < _C) & (sy >= 0) & (sy < _C)
    out = np.zeros_like(a)
    out[ok] = a[sy[ok], sx[ok]]
    return Image.fromarray(out, "RGBA")


def _apply_shape_concept(sprite: Image.Image, scene: Scene, rng: np.random.Generator, box) -> Image.Image:
    c, v = scene.concept, scene.variant
    yy, xx = np.mgrid[0:_C, 0:_C].astype(np.float32)
    x0, y0, x1, y1 = box
    h = y1 - y0
    if c == "melted" and v == 0:  # lower half sags straight down in drips, and a puddle forms
        t = np.clip((yy - (y0 + 0.35 * h)) / h, 0, None)
        phase = rng.uniform(0, 2 * math.pi)
        drip = 1.0 + 0.8 * np.maximum(0, np.sin(xx * 0.22 + phase))
        sprite = _warp(sprite, xx, yy - 14 * t**1.3 * drip)
        base_col = np.asarray(sprite)[int(y0 + 0.4 * h), int((x0 + x1) / 2), :3]
        puddle = Image.new("RGBA", (_C, _C), (0, 0, 0, 0))
        pd = ImageDraw.Draw(puddle)
        pd.ellipse([x0 - 12, y1 + 12, x1 + 12, y1 + 22], fill=(*map(int, base_col), 255), outline=_INK, width=2)
        puddle.alpha_composite(sprite)
        sprite = puddle
    elif c == "melted":  # the whole body slumps sideways, with wavy horizontal ripples
        t = np.clip((yy - y0) / h, 0, 1.3)
        side = 1 if rng.random() < 0.5 else -1
        shift = side * (22 * (1 - t) ** 2 - 8) + 4 * np.sin(yy * 0.35)
        sprite = _warp(sprite, xx - shift, y0 + (yy - y0) * 1.25 - 0.25 * h)
    elif c == "crumpled" and v == 0:  # jagged outline + dark creases
        noise = rng.normal(0, 1, (8, 8)).astype(np.float32)
        big = np.asarray(Image.fromarray(noise).resize((_C, _C), Image.BICUBIC))
        noise2 = rng.normal(0, 1, (8, 8)).astype(np.float32)
        big2 = np.asarray(Image.fromarray(noise2).resize((_C, _C), Image.BICUBIC))
        sprite = _warp(sprite, xx + 6 * big, yy + 6 * big2)
        d = ImageDraw.Draw(sprite)
        alpha = np.asarray(sprite)[:, :, 3]
        for _ in range(4):
            p = [(rng.uniform(x0, x1), rng.uniform(y0, y1)) for _ in range(3)]
            overlay = Image.new("RGBA", (_C, _C), (0, 0, 0, 0))
            ImageDraw.Draw(overlay).line(p, fill=(30, 30, 30, 200), width=3)
            ov = np.asarray(overlay).copy()
            ov[:, :, 3] = np.minimum(ov[:, :, 3], alpha)
            sprite.alpha_composite(Image.fromarray(ov, "RGBA"))
        del d
    elif c == "crumpled":  # squeezed narrow into accordion folds with alternating shading
        cxm = (x0 + x1) / 2
        fold = 4 * np.abs(((yy / 8) % 2) - 1)
        sprite = _warp(sprite, cxm + (xx - cxm) * 1.7 + fold, yy)
        a = np.asarray(sprite).astype(np.float32)
        shade = np.where(((yy // 8) % 2) == 0, 0.6, 1.0)[..., None]
        a[:, :, :3] *= shade
        sprite = Image.fromarray(a.astype(np.uint8), "RGBA")
    elif c == "frozen" and v == 0:  # translucent ice block around the icy body
        block = Image.new("RGBA", (_C, _C), (0, 0, 0, 0))
        bd = ImageDraw.Draw(block)
        bd.rounded_rectangle([x0 - 24, y0 - 14, x1 + 24, y1 + 12], radius=8, fill=(150, 210, 240, 110),
                             outline=(90, 150, 200, 255), width=3)
        bd.line([(x0 - 16, y0 - 6), (x0 - 6, y0 - 6)], fill=(255, 255, 255, 230), width=3)
        sprite.alpha_composite(block)
    elif c == "frozen":  # icicles hanging from the body's lower edge, frost speckles
        d = ImageDraw.Draw(sprite)
        n = 5
        for k in range(n):
            ix = x0 + (k + 0.5) * (x1 - x0) / n
            col = np.asarray(sprite)[:, int(ix), 3]
            rows = np.nonzero(col > 0)[0]
            top = rows.max() - 2 if len(rows) else y1
            ln = rng.uniform(12, 20)
            d.polygon([(ix - 4, top), (ix + 4, top), (ix, top + ln)], fill=(225, 245, 255, 255),
                      outline=(90, 150, 200, 255))
    elif c == "sleeping" and v == 1:  # dozing: the whole body tilts
        sprite = sprite.rotate(28 * (1 if rng.random() < 0.5 else -1), resample=Image.NEAREST,
                               center=((x0 + x1) / 2, y1))
    return sprite


def render(scene: Scene) -> Image.Image:
    """Render `scene` as a 64x64 RGB image; the same scene always gives the same pixels."""
    rng = np.random.default_rng(
        [scene.seed, SUBJECTS.index(scene.subject), APPEARANCES.index(scene.appearance),
         CONCEPT_NAMES.index(scene.concept), scene.variant, scene.count]
    )
    bg = np.array(_BG, np.float32) + rng.uniform(-10, 10, 3)
    canvas = Image.fromarray(np.broadcast_to(bg, (_C, _C, 3)).astype(np.uint8)).convert("RGBA")
    sprite = _sprite(scene, rng)
    n = scene.count
    if n == 1:
        s = rng.uniform(0.82, 0.95)
        slots = [(_C / 2 + rng.uniform(-6, 6), _C / 2 + rng.uniform(-4, 4), s)]
    elif scene.variant == 0:  # a row (two rows for 4-5), side by side
        rows = [n] if n <= 3 else [(n + 1) // 2, n // 2]
        s = 0.45 if n <= 3 else 0.4
        slots = []
        for ri, k in enumerate(rows):
            yc = _C / 2 if len(rows) == 1 else _C * (0.3 + 0.42 * ri)
            for j in range(k):
                slots.append((_C * (j + 0.5) / k, yc + rng.uniform(-3, 3), s))
    else:  # a pile: a stack of rows narrowing upwards
        rows = {2: [1, 1], 3: [2, 1], 4: [3, 1], 5: [3, 2]}[n]
        s = 0.36
        slots = []
        for ri, k in enumerate(rows):
            yc = _C * 0.78 - ri * _C * 0.36
            for j in range(k):
                slots.append((_C / 2 + (j - (k - 1) / 2) * _C * 0.32, yc, s))
    for x, y, s in slots:
        size = round(_C * s * 1.25)
        sp = sprite.resize((size, size), Image.BILINEAR)
        canvas.alpha_composite(sp, (round(x - size / 2), round(y - size / 2)))
    return canvas.convert("RGB").resize((SIZE, SIZE), Image.BOX)


def grid(images: list[Image.Image], cols: int = 8, pad: int = 2) -> Image.Image:
    """Tile images into one sheet (white gaps)."""
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet
