"""Images as users really have them -> clean RGB tensors.

    from lego_inversion.images import load_image, to_tensor, make_grid
    img = load_image("with/IMG_0042.jpg", size=512)     # RGB, EXIF-rotated, center-cropped, resized
    x = to_tensor(img)                                  # float [3, H, W] in [-1, 1]

Phone photos carry an EXIF orientation, PNGs come as RGBA / L / P / 16-bit ("I;16", "I"), print files as CMYK.
Everything is converted to 8-bit RGB here, once, so the rest of the package sees one kind of image. Transparent
pixels are composited onto white (what a viewer shows), not onto black garbage in the colour channels.
A corrupt or unreadable file raises `UserError` naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_PIXELS = 20_000 * 20_000  # very large photos are fine; decompression bombs beyond this are not


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (hidden files ignored)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. 16/32-bit greyscale is rescaled from its full range, alpha goes onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square, then resize to `size`×`size` (Lanczos; reduce first for huge inputs)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side >= 4 * size:  # draft-quality box reduction first: fast and alias-free for 20-megapixel photos
        image = image.reduce(max(1, side // (2 * size)))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def crop_geometry(width: int, height: int, size: int, flipped: bool = False) -> tuple[int, int, int, int]:
    """SDXL micro-conditioning of `center_crop_resize`: (original height, original width, crop top, crop left),
    the crop offset in the coordinates of the image resized so its short side is `size` (as diffusers' SDXL
    training scripts record it); `flipped` gives the left offset of the mirrored image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if flipped:
        left = width - side - left
    return height, width, round(top * size / side), round(left * size / side)


def load_image(path: str | Path, size: int | None = None) -> Image.Image:
    """Open, verify, EXIF-rotate and convert one image; center-crop and resize when `size` is given."""
    path = Path(path)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS  # this call's bomb limit, restored below
    try:
        return _load(path, size)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _load(path: Path, size: int | None) -> Image.Image:
    try:
        with Image.open(path) as probe:
            probe.verify()  # catches truncated / corrupt files that open() alone accepts
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            image = to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read this image ({reason}); replace or remove the file") from None
    if size is not None:
        image = center_crop_resize(image, size)
    return image


def rotate_hue(image: Image.Image, fraction: float) -> Image.Image:
    """`image` (RGB) with every pixel's hue turned by `fraction` of the colour wheel (PIL's 8-bit HSV: H + 256 ·
    fraction, mod 256); saturation and value are kept, so greys, black and white stay as they are."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + round(256 * fraction)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [3, H, W] in [-1, 1] (the VAE's input range)."""
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_pil(tensor: torch.Tensor) -> list[Image.Image]:
    """Float tensor [B, 3, H, W] in [-1, 1] -> list of PIL images."""
    arr = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images (all resized to the first one's size) into one picture, white padding between cells."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), (255, 255, 255))
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(image.convert("RGB").resize((w, h)), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid
