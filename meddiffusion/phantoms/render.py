"""Images of a phantom: CT, SPECT, PET and cine MR from the same anatomy.

Every renderer maps tissues to values (``tissues.TISSUES``), composites them with partial
volume on the requested grid at time t, and returns ``meddiffusion.io.Volume`` objects on
that grid.  Renderers are deterministic: SPECT and PET involve no randomness, and the CT
texture and MR coil jitter and noise come from ``seed`` (default: the phantom's seed).

- CT: HU of non-contrast CT plus mild tissue texture (band-limited noise scaled per tissue).
- SPECT: Tc-99m sestamibi concentration (soft tissue = 1) and the 140 keV μ-map (1/cm).
- PET: FDG SUV and the 511 keV μ-map (1/cm).
- MR: cine bSSFP magnitude (``tissues.bssfp_signal``) times a smooth receive-coil shading,
  with optional Rician noise.

For CT motion simulation, :func:`render_calcium` gives the plaques alone (opacity and HU) at
any instant, and :func:`view_times` the acquisition time of each projection.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from meddiffusion.io import Volume
from meddiffusion.phantoms.grid import Grid
from meddiffusion.phantoms.phantom import Phantom
from meddiffusion.phantoms.raster import Canvas
from meddiffusion.phantoms.tissues import Tissue, bssfp_signal

__all__ = ["MODALITIES", "render_ct", "render_spect", "render_pet", "render_mr", "render_calcium", "render",
           "render_sequence", "view_times"]

MODALITIES = ("ct", "spect", "pet", "mr")

_PROPERTIES = {
    "hu": lambda t: t.hu, "texture": lambda t: t.texture, "spect": lambda t: t.spect, "pet": lambda t: t.pet,
    "mu140": lambda t: t.mu140, "mu511": lambda t: t.mu511, "mr": lambda t: bssfp_signal(t.pd, t.t1, t.t2),
}
_FIELD_CACHE: OrderedDict = OrderedDict()


def _cached(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Static per-grid fields (texture, coil shading), kept for the last few grids."""
    if key not in _FIELD_CACHE:
        _FIELD_CACHE[key] = make()
        while len(_FIELD_CACHE) > 4:
            _FIELD_CACHE.popitem(last=False)
    _FIELD_CACHE.move_to_end(key)
    return _FIELD_CACHE[key]


def _table(phantom: Phantom, props: tuple[str, ...], stress: bool = True) -> dict[str, torch.Tensor]:
    tissues: dict[str, Tissue] = phantom.tissues(stress=stress)
    return {name: torch.tensor([_PROPERTIES[p](t) for p in props], dtype=torch.float32)
            for name, t in tissues.items()}


def _images(phantom: Phantom, grid: Grid, t: float, props: tuple[str, ...], calcium: bool = True,
            stress: bool = True) -> torch.Tensor:
    key = props if stress else props + ("rest",)      # the cached scene holds the table it was drawn with
    values, _ = phantom.frame(grid, float(t), _table(phantom, props, stress), key, calcium=calcium)
    return values


def _seed(phantom: Phantom, seed: int | None) -> int:
    return phantom.params.seed if seed is None else int(seed)


def texture_field(grid: Grid, seed: int) -> torch.Tensor:
    """Unit-variance noise smooth over ~2 voxels (trilinear upsampling of half-resolution noise)."""

    def make() -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randn([1, 1] + [s // 2 + 2 for s in grid.shape], generator=gen)
        noise = F.interpolate(coarse, size=grid.shape, mode="trilinear", align_corners=True)[0, 0]
        return noise / noise.std().clamp_min(1e-6)

    return _cached(("texture", grid, seed), make)


def render_ct(phantom: Phantom, grid: Grid, t: float = 0.0, *, seed: int | None = None,
              calcium: bool = True, texture_scale: float = 1.0) -> Volume:
    """Non-contrast CT in HU at time t; ``calcium=False`` leaves the plaques out.

    ``texture_scale`` multiplies every tissue's texture amplitude: real organs range from
    nearly flat (brain, fluid) to coarse (liver, muscle), and a denoiser that only ever saw
    one amplitude mistakes noise of that size for anatomy.
    """
    if not texture_scale >= 0:
        raise ValueError(f"texture_scale must be >= 0, got {texture_scale}")
    hu, amplitude = _images(phantom, grid, t, ("hu", "texture"), calcium)
    hu += (texture_scale * amplitude) * texture_field(grid, _seed(phantom, seed))
    return grid.volume(hu, modality="CT", units="HU")


def render_calcium(phantom: Phantom, grid: Grid, t: float) -> tuple[Volume, Volume]:
    """The plaques alone at time t: opacity (partial-volume fraction) and their HU.

    A CT at time t is ``background·(1 − opacity) + opacity·hu`` with ``background`` from
    ``render_ct(..., calcium=False)``: what a per-view projector needs, p_i = R_i[x(t_i)].
    """
    st = phantom.heart.state(t, phantom.heart_shift(phantom.descent(t)))
    names = [f"plaque_{p.id}" for p in phantom.params.plaques]
    tissues = phantom.tissues()
    table = {name: torch.tensor([tissues[name].hu, 1.0]) for name in names}
    canvas = Canvas.blank(grid, grid.full, torch.zeros(2), 0, table)
    for shape in phantom.coronaries.plaque_shapes(st):
        canvas.draw(shape)
    colour, alpha = canvas.values
    hu = torch.where(alpha > 0, colour / alpha.clamp_min(1e-6), torch.zeros_like(colour))
    return grid.volume(alpha, units="fraction"), grid.volume(hu, modality="CT", units="HU")


def render_spect(phantom: Phantom, grid: Grid, t: float = 0.0, *, stress: bool = True) -> tuple[Volume, Volume]:
    """Tc-99m sestamibi activity (relative concentration) and the 140 keV μ-map (1/cm).

    A stress study shows the perfusion defect and the scar; a rest study (``stress=False``)
    only the scar.
    """
    activity, mu = _images(phantom, grid, t, ("spect", "mu140"), stress=stress)
    return grid.volume(activity, modality="NM", units="relative"), grid.volume(mu, units="1/cm")


def render_pet(phantom: Phantom, grid: Grid, t: float = 0.0) -> tuple[Volume, Volume]:
    """FDG activity (SUV) and the 511 keV μ-map (1/cm)."""
    activity, mu = _images(phantom, grid, t, ("pet", "mu511"))
    return grid.volume(activity, modality="PT", units="SUV"), grid.volume(mu, units="1/cm")


def coil_shading(grid: Grid, seed: int, coils: int = 8) -> torch.Tensor:
    """Root-sum-of-squares sensitivity of anterior and posterior surface coils, 1 at the heart.

    Each element falls off as 1 / (1 + r²/R²) with R = 150 mm; positions jitter by a few mm
    with the seed.
    """

    def make() -> torch.Tensor:
        rng = np.random.default_rng([seed, 2])
        pts = grid.points()
        total = torch.zeros(grid.shape)
        heart = 0.0
        for k in range(coils):
            front = k < coils // 2
            x = -90.0 + 180.0 * (k % (coils // 2)) / max(coils // 2 - 1, 1) + rng.uniform(-5, 5)
            y = (-150.0 if front else 150.0) + rng.uniform(-5, 5)
            z = rng.uniform(-20, 20)
            r2 = (pts.x - x) ** 2 + (pts.y - y) ** 2 + (pts.z - z) ** 2
            total += (1.0 / (1.0 + r2 / 150.0 ** 2)) ** 2
            heart += (1.0 / (1.0 + (x * x + y * y + z * z) / 150.0 ** 2)) ** 2
        return torch.sqrt(total / heart)

    return _cached(("coils", grid, seed, coils), make)


def render_mr(phantom: Phantom, grid: Grid, t: float = 0.0, *, seed: int | None = None,
              noise: float = 0.0) -> Volume:
    """Cine bSSFP magnitude at time t (arbitrary units, blood ≈ 0.3 near the heart).

    ``noise`` is the standard deviation of complex Gaussian noise relative to the blood
    signal; the magnitude of signal + noise is Rician, as in real magnitude images.
    """
    if noise < 0:
        raise ValueError(f"MR noise must be ≥ 0 (relative to the blood signal), got {noise}")
    seed = _seed(phantom, seed)
    (signal,) = _images(phantom, grid, t, ("mr",))
    signal = signal * coil_shading(grid, seed)
    if noise > 0:
        blood = phantom.tissues()["blood"]
        sigma = noise * bssfp_signal(blood.pd, blood.t1, blood.t2)
        stream = np.random.SeedSequence([seed, 3, int(round(t * 1e6))]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(stream))
        real = signal + sigma * torch.randn(grid.shape, generator=gen)
        imag = sigma * torch.randn(grid.shape, generator=gen)
        signal = torch.sqrt(real * real + imag * imag)
    return grid.volume(signal, modality="MR", units="a.u.")


def render(phantom: Phantom, grid: Grid, modality: str, t: float = 0.0, *, seed: int | None = None,
           **options) -> dict[str, Volume]:
    """One modality by name: {"image": ...} plus {"mu": ...} for SPECT and PET."""
    modality = modality.lower()
    if modality == "ct":
        return {"image": render_ct(phantom, grid, t, seed=seed, **options)}
    if modality == "spect":
        image, mu = render_spect(phantom, grid, t)
        return {"image": image, "mu": mu}
    if modality == "pet":
        image, mu = render_pet(phantom, grid, t)
        return {"image": image, "mu": mu}
    if modality == "mr":
        return {"image": render_mr(phantom, grid, t, seed=seed, **options)}
    raise ValueError(f"unknown modality '{modality}'; expected one of {', '.join(MODALITIES)}")


def render_sequence(phantom: Phantom, grid: Grid, modality: str, times: list[float], *, seed: int | None = None,
                    labels: bool = True, callback: Callable[[int, int], None] | None = None,
                    **options) -> list[dict[str, Volume]]:
    """Frames at ``times``: per frame the modality's volumes plus "labels" (if asked)."""
    frames = []
    for i, t in enumerate(times):
        frame = render(phantom, grid, modality, t, seed=seed, **options)
        if labels:
            frame["labels"] = phantom.labels(grid, t)
        frames.append(frame)
        if callback is not None:
            callback(i + 1, len(times))
    return frames


def view_times(n_views: int, rotation_s: float, *, start_s: float = 0.0, arc_deg: float = 360.0) -> np.ndarray:
    """Acquisition time of each projection of a CT rotation: view i at start + i·Δt.

    ``arc_deg`` is the angular range the ``n_views`` cover (180 + fan angle for a half-scan
    reconstruction); the gantry turns 360° in ``rotation_s``.
    """
    if n_views < 1:
        raise ValueError(f"number of views must be ≥ 1, got {n_views}")
    if not rotation_s > 0 or not 0 < arc_deg <= 360 * 10:
        raise ValueError(f"rotation time must be > 0 s and the arc 0-3600°, got {rotation_s} s, {arc_deg}°")
    span = rotation_s * arc_deg / 360.0
    return start_s + np.arange(n_views) * (span / n_views)
