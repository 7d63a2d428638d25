"""Low-dose CT from a normal-dose slice by noise insertion in the projection domain.

The recipe follows Zeng et al., IEEE TNS 62(5):2226, 2015 and Yu et al., JCAT 36(4):477, 2012
(whose insertion made the Mayo/AAPM low-dose challenge data):

1. HU -> attenuation mu -> line integrals p = R mu (parallel beam, ``radon.py``).
2. Counts N = Poisson(a I0 e^-p) + Normal(0, sigma_e^2) for dose fraction a, I0 photons per
   ray per view and electronic noise sigma_e (in counts).
3. p_ld = -ln(max(N, 1) / (a I0)); the clip at one count models photon starvation.
4. Output = input HU + [FBP(p_ld) - FBP(p)] in HU.

Step 4 adds only the noise image. Reconstructing the whole low-dose slice instead would also
bring in the FBP's blur and discretisation bias, so the pair would differ by more than dose;
this way the output keeps the input's resolution and mean HU, and FBP being linear, the noise
image is a single FBP of p_ld - p. The noise texture comes from the chosen ramp window
("hann" by default, a smooth kernel).

Step 2 treats the input as noise-free. A clinical normal-dose slice already carries the
full-dose noise, so for such inputs ``input_is_noisy=True`` adds only the missing variance in
the log domain (Yu et al.): sigma_add^2 = (1-a)/a * e^p/I0 * [1 + (1+a)/a * sigma_e^2 e^p/I0],
making the total noise that of dose a. Use ``calibrate_i0`` first so that I0 reproduces the
input's own noise level.

The detector spans the image diagonal, so the whole square is measured: a body that reaches
the corners (outside the scanner's circular field of view) is not truncated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .radon import FILTERS, ParallelBeamGeometry, RadonTransform

__all__ = ["MU_WATER_PER_MM", "hu_to_mu", "mu_to_hu", "simulate_low_dose", "calibrate_i0", "noise_std_in_roi"]

# Linear attenuation of water at the effective energy of a filtered 120 kVp beam, about 70 keV
# (NIST XCOM: mu/rho = 0.194 cm^2/g at 70 keV, 0.184 at 80 keV; 0.0192 /mm sits at ~72 keV).
MU_WATER_PER_MM = 0.0192

Roi = torch.Tensor | tuple[slice, slice]


def hu_to_mu(hu: torch.Tensor) -> torch.Tensor:
    """mu = mu_water (1 + HU / 1000) in 1/mm, clipped at 0 (air and padding below -1000 HU)."""
    return (MU_WATER_PER_MM * (1.0 + hu / 1000.0)).clamp(min=0.0)


def mu_to_hu(mu: torch.Tensor) -> torch.Tensor:
    """HU = 1000 (mu / mu_water - 1)."""
    return 1000.0 * (mu / MU_WATER_PER_MM - 1.0)


def simulate_low_dose(hu_slices: torch.Tensor, dose_fraction: float, *, pixel_size_mm: float,
                      i0: float = 1e6, electronic_noise_std: float = 10.0, num_views: int = 720,
                      filter: str = "hann", input_is_noisy: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Low-dose version of (H, W) or (B, H, W) HU slices at ``dose_fraction`` of I0.

    ``i0`` is the full-dose photon count per ray and view; pick it with ``calibrate_i0`` per
    source dataset. The result has the input's shape and device, in float32 HU, and is
    deterministic for a seeded ``generator`` (which must live on the input's device).
    """
    hu, squeeze = _check_slices(hu_slices)
    _check_dose(dose_fraction)
    _check_positive(i0=i0, pixel_size_mm=pixel_size_mm)
    _check_filter(filter)
    if electronic_noise_std < 0:
        raise ValueError(f"electronic_noise_std must be >= 0 counts, got {electronic_noise_std}")
    radon = RadonTransform(ParallelBeamGeometry(hu.shape[-1], num_views, pixel_size_mm=pixel_size_mm),
                           device=hu.device)
    clean = radon(hu_to_mu(hu))
    noisy = _noisy_line_integrals(clean, dose_fraction, i0, electronic_noise_std, input_is_noisy, generator)
    low_dose = hu + _noise_image_hu(radon, noisy - clean, filter)
    return low_dose[0] if squeeze else low_dose


def calibrate_i0(hu_slice: torch.Tensor, target_noise_hu: float, roi: Roi, *, pixel_size_mm: float,
                 electronic_noise_std: float = 10.0, num_views: int = 720, filter: str = "hann",
                 seed: int = 0, i0_range: tuple[float, float] = (1e2, 1e9), rtol: float = 0.02,
                 max_iterations: int = 60, callback: Callable[[int, int], None] | None = None,
                 clip: bool = False) -> float:
    """I0 whose simulated full-dose noise (a = 1) has std ``target_noise_hu`` inside ``roi``.

    Measure ``target_noise_hu`` on the real normal-dose images (e.g. ``noise_std_in_roi`` in
    a flat soft-tissue region). Bisection on log I0: noise falls monotonically with I0, and each
    trial reuses the same seed so sampling noise does not make the curve jitter. The noise is
    measured on the inserted noise image alone, so the input's own noise does not bias it.
    A target outside what ``i0_range`` can give is an error, or with ``clip`` gives the bound
    nearest to it (training data: a thick object whose noise floor is above the draw).
    """
    hu, _ = _check_slices(hu_slice)
    if hu.shape[0] != 1:
        raise ValueError(f"calibrate_i0 takes one slice (H, W), got shape {tuple(hu_slice.shape)}")
    _check_positive(target_noise_hu=target_noise_hu, pixel_size_mm=pixel_size_mm, rtol=rtol)
    _check_filter(filter)
    low, high = i0_range
    if not 0 < low < high:
        raise ValueError(f"i0_range must be (low, high) with 0 < low < high, got {i0_range}")
    radon = RadonTransform(ParallelBeamGeometry(hu.shape[-1], num_views, pixel_size_mm=pixel_size_mm),
                           device=hu.device)
    clean = radon(hu_to_mu(hu))

    def noise_at(i0: float) -> float:
        generator = torch.Generator(device=hu.device).manual_seed(seed)
        noisy = _noisy_line_integrals(clean, 1.0, i0, electronic_noise_std, False, generator)
        return noise_std_in_roi(_noise_image_hu(radon, noisy - clean, filter)[0], roi)

    least, most = noise_at(high), noise_at(low)
    if clip and not least <= target_noise_hu <= most:  # the nearest reachable noise level
        return high if target_noise_hu < least else low
    if not least <= target_noise_hu <= most:
        raise ValueError(f"target noise {target_noise_hu} HU is outside what I0 in {i0_range} gives "
                         f"({least:.3g} to {most:.3g} HU); widen i0_range")
    log_low, log_high = math.log(low), math.log(high)
    for step in range(max_iterations):
        i0 = math.exp((log_low + log_high) / 2)
        noise = noise_at(i0)
        if callback is not None:
            callback(step + 1, max_iterations)
        if abs(noise / target_noise_hu - 1) <= rtol:
            return i0
        if noise > target_noise_hu:
            log_low = math.log(i0)
        else:
            log_high = math.log(i0)
    raise ValueError(f"calibrate_i0 did not reach {target_noise_hu} HU within {rtol:.0%} in "
                     f"{max_iterations} steps (last: I0 = {i0:.4g}, noise {noise:.4g} HU); "
                     "use a larger ROI or a looser rtol")


def noise_std_in_roi(image: torch.Tensor, roi: Roi) -> float:
    """Standard deviation of a 2D ``image`` inside ``roi``: a (H, W) bool mask or (rows, cols) slices."""
    if image.ndim != 2:
        raise ValueError(f"image must be 2D (H, W), got shape {tuple(image.shape)}")
    if isinstance(roi, torch.Tensor):
        if roi.dtype != torch.bool or roi.shape != image.shape:
            raise ValueError(f"roi mask must be bool with the image's shape {tuple(image.shape)}, "
                             f"got {roi.dtype} {tuple(roi.shape)}")
        values = image[roi.to(image.device)]
    elif isinstance(roi, tuple) and len(roi) == 2 and all(isinstance(r, slice) for r in roi):
        values = image[roi].reshape(-1)
    else:
        raise ValueError(f"roi must be a bool mask or a (row_slice, col_slice) pair, got {type(roi).__name__}")
    if values.numel() < 2:
        raise ValueError(f"roi must cover at least 2 pixels, got {values.numel()}")
    return float(values.double().std())


def _noisy_line_integrals(clean: torch.Tensor, dose: float, i0: float, electronic_std: float,
                          input_is_noisy: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Line integrals as measured at ``dose`` * ``i0`` photons (see the module docstring)."""
    if input_is_noisy:
        photon_variance = torch.exp(clean) / i0  # variance of p at full dose from photon noise alone
        electronic_share = (1 + dose) / dose * electronic_std**2 * photon_variance
        variance = (1 - dose) / dose * photon_variance * (1 + electronic_share)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return clean + variance.sqrt() * noise
    expected = dose * i0 * torch.exp(-clean)
    counts = torch.poisson(expected, generator=generator)
    if electronic_std > 0:
        counts = counts + electronic_std * torch.randn(clean.shape, generator=generator,
                                                       device=clean.device, dtype=clean.dtype)
    return -torch.log(counts.clamp(min=1.0) / (dose * i0))


def _noise_image_hu(radon: RadonTransform, sinogram_noise: torch.Tensor, filter: str) -> torch.Tensor:
    return radon.fbp(sinogram_noise, filter) * (1000.0 / MU_WATER_PER_MM)


def _check_slices(hu_slices: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(hu_slices, torch.Tensor):
        raise ValueError(f"HU slices must be a torch.Tensor, got {type(hu_slices).__name__}")
    if hu_slices.ndim not in (2, 3):
        raise ValueError(f"HU slices must be (H, W) or (B, H, W), got shape {tuple(hu_slices.shape)}")
    if hu_slices.shape[-1] != hu_slices.shape[-2]:
        raise ValueError(f"HU slices must be square (H == W) for the CT geometry, got "
                         f"{tuple(hu_slices.shape[-2:])}; pad or crop them first")
    squeeze = hu_slices.ndim == 2
    hu = hu_slices.unsqueeze(0) if squeeze else hu_slices
    return hu.float(), squeeze


def _check_dose(dose_fraction: float) -> None:
    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1] (e.g. 0.25 for quarter dose), got {dose_fraction}")


def _check_filter(filter: str) -> None:
    if filter not in FILTERS:
        raise ValueError(f"unknown filter '{filter}'; expected one of {', '.join(FILTERS)}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
