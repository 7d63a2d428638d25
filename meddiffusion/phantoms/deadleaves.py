"""Procedural CT slabs with natural-image statistics: 3D dead leaves in HU.

The thorax phantom is built from smooth parametric organs, so a denoiser trained on it alone
never sees what real scans are full of: sharp high-contrast borders at every scale (cortical
bone, skull, air–tissue), fine texture inside organs and vessels down to a pixel. A denoiser
that has not seen them takes them for noise and smooths them away.

Dead-leaves images (Matheron; Lee, Mumford & Huang, IJCV 2001) reproduce the statistics that
matter here: occluding shapes with a power-law size density p(r) ∝ r⁻³ are scale invariant,
have sharp edges everywhere and the 1/f² power spectrum of natural images; denoisers trained
on them come close to those trained on photographs (Achddou et al., 2021). Here the leaves
are 3D ellipsoids, so adjacent slices share structure the way CT slices do, and they carry
CT's values:

- every leaf draws a tissue class (air, lung, fat, soft tissue, contrast-enhanced blood, bone)
  and a value within it; bone leaves often get a marrow core (a cortical shell);
- elongated leaves (vessels, bronchi walls, trabeculae) run through or along the slab, down
  to sub-pixel widths, where partial volume makes them faint;
- each leaf has its own texture amplitude on a shared correlated-noise field (organ texture);
- the leaves fill a body-sized ellipse in air (zoomed fields of view lie inside it), so the
  rays are as long as through a patient and air–skin borders occur;
- the composed image is blurred by a Gaussian of 0.3–1.0 pixel (the scanner's point spread),
  so edges are as sharp as a reconstruction kernel leaves them, not sharper.

:func:`render_dead_leaves` is a pure function of the seed; it returns noise-free HU, which
the LDCT data then pass through the same projection-domain noise as the phantom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["TISSUE_CLASSES", "DeadLeavesOptions", "render_dead_leaves"]

#: (name, probability, HU range of the leaf's value, texture amplitude range in HU)
TISSUE_CLASSES = (
    ("air", 0.07, (-1000.0, -990.0), (0.0, 2.0)),
    ("lung", 0.10, (-900.0, -650.0), (5.0, 50.0)),
    ("fat", 0.15, (-130.0, -60.0), (0.0, 10.0)),
    ("soft tissue", 0.38, (-20.0, 90.0), (0.0, 15.0)),
    ("enhanced blood", 0.12, (100.0, 450.0), (0.0, 15.0)),
    ("bone", 0.18, (250.0, 1900.0), (10.0, 100.0)),
)


@dataclass(frozen=True)
class DeadLeavesOptions:
    """Leaf sizes (radius in mm, density ∝ r⁻³), the share of each slice covered, shape mix and blur."""

    min_radius_mm: float = 1.2
    max_radius_fov: float = 0.3
    cover: float = 0.995
    tiny_radius_mm: tuple[float, float] = (0.2, 0.8)
    tiny_cover: tuple[float, float] = (0.0, 0.05)
    elongated_share: float = 0.2
    shell_share: float = 0.5
    blur_px: tuple[float, float] = (0.3, 1.0)
    texture_px: tuple[float, float] = (0.6, 3.0)

    def __post_init__(self) -> None:
        if not 0 < self.min_radius_mm or not 0 < self.max_radius_fov <= 1 or not 0 < self.cover < 1:
            raise ValueError("dead leaves need min_radius_mm > 0, 0 < max_radius_fov <= 1 and 0 < cover < 1, got "
                             f"{self.min_radius_mm}, {self.max_radius_fov}, {self.cover}")


def _power_law_radii(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """``count`` radii with density ∝ r⁻³ on [low, high] (inverse CDF of 1/r²)."""
    u = rng.uniform(size=count)
    return 1.0 / np.sqrt(low**-2 - u * (low**-2 - high**-2))


def _mean_area(low: float, high: float) -> float:
    """E[π r²] under the r⁻³ density on [low, high]."""
    return math.pi * 2 * math.log(high / low) / (low**-2 - high**-2)


def _draw_class(rng: np.random.Generator) -> tuple[str, float, float]:
    """(class name, value HU, texture amplitude HU) of one leaf."""
    p = np.array([c[1] for c in TISSUE_CLASSES])
    name, _, (lo, hi), (t_lo, t_hi) = TISSUE_CLASSES[int(rng.choice(len(TISSUE_CLASSES), p=p / p.sum()))]
    return name, float(rng.uniform(lo, hi)), float(rng.uniform(t_lo, t_hi))


def render_dead_leaves(shape: tuple[int, int, int], pixel_mm: float, slice_mm: float, seed: int,
                       options: DeadLeavesOptions = DeadLeavesOptions()) -> np.ndarray:
    """Noise-free HU slab (slices, H, W) of 3D dead leaves; the same seed gives the same slab."""
    slices, height, width = shape
    if min(shape) < 1 or pixel_mm <= 0 or slice_mm <= 0:
        raise ValueError(f"dead leaves need a positive shape and spacing, got {shape}, {pixel_mm}, {slice_mm}")
    rng = np.random.default_rng(seed)
    value = np.full(shape, _draw_class(rng)[1], np.float32)
    texture = np.zeros(shape, np.float32)
    z_mm = (np.arange(slices) - (slices - 1) / 2) * slice_mm
    low = options.min_radius_mm
    high = max(low * 1.01, options.max_radius_fov * max(height, width) * pixel_mm)
    painted = np.zeros(shape, bool)
    batch = max(64, int(height * width * pixel_mm**2 / _mean_area(low, high)) // 8)
    for _ in range(200):  # leaves until every slice is covered (or the cap: 25 slab areas of leaves)
        for radius in _power_law_radii(rng, batch, low, high):
            _paint_leaf(value, texture, painted, rng, radius, high, z_mm, pixel_mm, options)
        if painted.mean(axis=(1, 2)).min() >= options.cover:
            break
    _paint_tiny_leaves(value, texture, rng, z_mm, pixel_mm, options)
    sigma = rng.uniform(*options.texture_px)
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0, sigma, sigma))
    field /= max(float(field.std()), 1e-6)
    image = value + texture * field
    image = np.where(_body(rng, height, width, pixel_mm), image, -1000.0)
    blur = rng.uniform(*options.blur_px)
    image = ndimage.gaussian_filter(image, (0, blur, blur))
    return np.clip(image, -1024.0, 3071.0).astype(np.float32)


def _body(rng: np.random.Generator, height: int, width: int, pixel_mm: float) -> np.ndarray:
    """(H, W) mask of a body-sized ellipse (semi-axes at most 200 × 150 mm), air outside.

    A field of view smaller than the body (a zoomed reconstruction) is covered from edge to
    edge; a large one shows the air around it, and the rays stay as long as through a patient.
    """
    semi_x = min(rng.uniform(0.35, 0.8) * width * pixel_mm, rng.uniform(120.0, 200.0))
    semi_y = semi_x * rng.uniform(0.6, 1.0)
    cy, cx = (rng.uniform(0.4, 0.6) * n for n in (height, width))
    yy, xx = np.mgrid[:height, :width]
    return ((yy - cy) * pixel_mm / semi_y) ** 2 + ((xx - cx) * pixel_mm / semi_x) ** 2 <= 1.0


def _paint_leaf(value: np.ndarray, texture: np.ndarray, painted: np.ndarray, rng: np.random.Generator,
                radius_mm: float, max_radius_mm: float, z_mm: np.ndarray, pixel_mm: float,
                options: DeadLeavesOptions) -> None:
    """One ellipsoid leaf in front of what is painted, anti-aliased over one pixel."""
    slices, height, width = value.shape
    name, hu, amplitude = _draw_class(rng)
    elongated = rng.uniform() < options.elongated_share
    if elongated:  # a vessel or trabecula: long in one direction, thin in the other
        a, b = min(radius_mm * rng.uniform(2.0, 6.0), max_radius_mm), radius_mm * rng.uniform(0.05, 0.3)
        c = radius_mm * (rng.uniform(3.0, 20.0) if rng.uniform() < 0.5 else rng.uniform(0.3, 1.0))
    else:
        a, b, c = radius_mm, radius_mm * rng.uniform(0.3, 1.0), radius_mm * rng.uniform(0.5, 2.0)
    angle = rng.uniform(0, math.pi)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    cz = rng.uniform(z_mm[0] - c, z_mm[-1] + c)
    drift = rng.normal(0.0, 0.3, 2) / pixel_mm  # pixels of centre shift per mm through the slab
    core = rng.uniform(0.55, 0.9) if name == "bone" and rng.uniform() < options.shell_share else None
    cos, sin = math.cos(angle), math.sin(angle)
    for k, z in enumerate(z_mm):
        dz = (z - cz) / c
        if abs(dz) >= 1:
            continue
        scale = math.sqrt(1 - dz * dz)
        ra, rb = a * scale / pixel_mm, b * scale / pixel_mm
        y0, x0 = cy + drift[0] * (z - cz), cx + drift[1] * (z - cz)
        reach = ra + 1.5
        top, bottom = max(int(y0 - reach), 0), min(int(y0 + reach) + 2, height)
        left, right = max(int(x0 - reach), 0), min(int(x0 + reach) + 2, width)
        if top >= bottom or left >= right:
            continue
        yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
        u = (xx - x0) * cos + (yy - y0) * sin
        v = -(xx - x0) * sin + (yy - y0) * cos
        alpha = _coverage(u, v, ra, rb)
        if not alpha.any():
            continue
        region = (k, slice(top, bottom), slice(left, right))
        value[region] += alpha * (hu - value[region])
        texture[region] += alpha * (amplitude - texture[region])
        painted[region] |= alpha > 0.5
        if core is not None:
            inner = _coverage(u, v, ra * core, rb * core)
            marrow = rng.uniform(60.0, 350.0)
            value[region] += inner * (marrow - value[region])


def _coverage(u: np.ndarray, v: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Share of each pixel inside the ellipse (u/ra)² + (v/rb)² ≤ 1, linear over one pixel at the border.

    The distance to the border is taken along the ray from the centre. A leaf thinner than a
    pixel is drawn half a pixel wide at a coverage of its width: partial volume keeps its area.
    """
    rb_eff = max(rb, 0.5)
    distance = np.hypot(u, v)
    rho = np.sqrt((u / ra) ** 2 + (v / rb_eff) ** 2)
    border = np.where(rho > 1e-6, distance / np.maximum(rho, 1e-6), max(ra, rb_eff))
    return (np.clip(0.5 + border - distance, 0.0, 1.0) * min(1.0, rb / rb_eff)).astype(np.float32)


def _paint_tiny_leaves(value: np.ndarray, texture: np.ndarray, rng: np.random.Generator, z_mm: np.ndarray,
                       pixel_mm: float, options: DeadLeavesOptions) -> None:
    """Sub-pixel to pixel-sized dots in front (small vessels and calcifications), vectorised.

    Painted as Gaussian dots of the leaf's value whose peak coverage falls with size below a
    pixel; their number covers ``tiny_cover`` of the slab's area.
    """
    slices, height, width = value.shape
    low, high = options.tiny_radius_mm
    cover = rng.uniform(*options.tiny_cover)
    count = int(cover * height * width * pixel_mm**2 / _mean_area(low, high))
    if count == 0:
        return
    radii = _power_law_radii(rng, count, low, high) / pixel_mm
    classes = [_draw_class(rng) for _ in range(count)]
    hu = np.array([c[1] for c in classes], np.float32)
    ys, xs = rng.integers(0, height, count), rng.integers(0, width, count)
    zs = rng.uniform(z_mm[0], z_mm[-1], count) if slices > 1 else np.zeros(count)
    extent_mm = radii * pixel_mm * rng.uniform(1.0, 8.0, count)  # short dots or vessels crossing slices
    offsets = np.arange(-2, 3)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    for k, z in enumerate(z_mm):
        keep = np.abs(z - zs) < np.maximum(extent_mm, 0.5 * (z_mm[1] - z_mm[0]) if slices > 1 else 1.0)
        if not keep.any():
            continue
        r, y, x, v = radii[keep], ys[keep], xs[keep], hu[keep]
        sigma = np.maximum(r, 0.35)[:, None, None]
        alpha = np.exp(-(dy**2 + dx**2)[None] / (2 * sigma**2)) * np.minimum(1.0, r / 0.5)[:, None, None]
        rows = np.clip(y[:, None, None] + dy[None], 0, height - 1)
        cols = np.clip(x[:, None, None] + dx[None], 0, width - 1)
        plane = value[k]
        weight = np.zeros((height, width), np.float32)
        target = np.zeros((height, width), np.float32)
        np.add.at(weight, (rows, cols), alpha.astype(np.float32))
        np.add.at(target, (rows, cols), (alpha * v[:, None, None]).astype(np.float32))
        share = np.clip(weight, 0.0, 1.0)
        mean = target / np.maximum(weight, 1e-6)
        plane += share * (mean - plane)
        texture[k] *= 1 - share
