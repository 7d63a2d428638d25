"""Parallel-beam CT projector and filtered back-projection in pure PyTorch.

Both operators are built on ``torch.nn.functional.grid_sample``, so they are batched,
differentiable and run unchanged on a GPU. Unlike a fixed system matrix, each view may see a
different image (``project_views``), which is what motion simulation needs: the sinogram of a
moving object is p_i = R_i[object at time t_i].

Conventions
-----------
- Images are square, N x N pixels of ``pixel_size_mm``; the rotation centre is the image
  centre. Columns run along x, rows along y.
- View v is at angle theta_v = v * pi / V, V views over [0, pi). Detector bin k sits at
  s_k = (k - (D - 1) / 2) * pixel_size_mm, the ray direction is (-sin theta, cos theta), and
  s = x cos theta + y sin theta.
- The default D = ceil(sqrt(2) * N) bins span the image diagonal, so every ray through the
  image is measured and FBP is valid over the whole square. With fewer bins, only the disk of
  radius D * pixel_size_mm / 2 is reconstructed correctly.
- Sinograms hold line integrals: attenuation in 1/mm times path length in mm.

Memory
------
Sampling grids are built per chunk of views rather than stored: storing them would cost
V * D^2 * 8 bytes (3 GB at 512^2 and 720 views). Besides its input and output, a call holds
one chunk, at most ``chunk_mb`` (default 32 MB) of grid plus samples, and for an even number
of views a copy of the input turned by 90 degrees. Under autograd the chunks are checkpointed,
so the backward pass rebuilds grids instead of keeping them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["FILTERS", "ParallelBeamGeometry", "RadonTransform", "ramp_filter"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hann")


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """Scanner geometry: image grid, views over [0, pi), detector bins as wide as a pixel."""

    image_size: int
    num_views: int
    num_detectors: int | None = None
    pixel_size_mm: float = 1.0
    angles: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.image_size) != self.image_size or self.image_size < 2:
            raise ValueError(f"image_size must be an integer >= 2, got {self.image_size}")
        if int(self.num_views) != self.num_views or self.num_views < 1:
            raise ValueError(f"num_views must be a positive integer, got {self.num_views}")
        if self.num_detectors is None:
            object.__setattr__(self, "num_detectors", math.ceil(math.sqrt(2.0) * self.image_size))
        elif int(self.num_detectors) != self.num_detectors or self.num_detectors < 1:
            raise ValueError(f"num_detectors must be a positive integer or None, got {self.num_detectors}")
        if not self.pixel_size_mm > 0:
            raise ValueError(f"pixel_size_mm must be > 0, got {self.pixel_size_mm}")
        angles = torch.arange(self.num_views, dtype=torch.float64) * (math.pi / self.num_views)
        object.__setattr__(self, "angles", angles)


def ramp_filter(num_detectors: int, spacing_mm: float, window: str = "ram-lak") -> torch.Tensor:
    """Frequency response (rfft layout, float64) of the windowed ramp filter, zero-padded.

    The ramp is the band-limited spatial kernel of Kak & Slaney (h[0] = 1/(4 tau^2),
    h[n odd] = -1/(pi n tau)^2, h[n even] = 0), not a sampled |f|: this keeps the DC gain right,
    so flat regions reconstruct without an offset. Padding to >= 2D stops circular wrap-around.
    Windows are functions of f / f_Nyquist: Shepp-Logan sinc(f/2), cosine cos(pi f/2),
    Hann (1 + cos(pi f))/2.
    """
    if window not in FILTERS:
        raise ValueError(f"unknown filter '{window}'; expected one of {', '.join(FILTERS)}")
    size = 2 ** math.ceil(math.log2(2 * num_detectors))
    n = torch.arange(size, dtype=torch.float64)
    n = torch.minimum(n, size - n)  # circular distance from the kernel centre
    kernel = torch.where(n % 2 == 1, -1.0 / (math.pi * n * spacing_mm) ** 2, torch.zeros_like(n))
    kernel[0] = 1.0 / (4.0 * spacing_mm**2)
    response = torch.fft.rfft(kernel).real * spacing_mm  # tau * sum approximates the convolution integral
    f = torch.linspace(0.0, 1.0, response.numel(), dtype=torch.float64)
    if window == "shepp-logan":
        response = response * torch.sinc(f / 2)
    elif window == "cosine":
        response = response * torch.cos(math.pi * f / 2)
    elif window == "hann":
        response = response * (1 + torch.cos(math.pi * f)) / 2
    return response


class RadonTransform:
    """Parallel-beam forward projection, per-view projection, back-projection and FBP."""

    def __init__(self, geometry: ParallelBeamGeometry, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, chunk_mb: float = 32.0) -> None:
        self.geometry = geometry
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.chunk_bytes = int(chunk_mb * 2**20)
        n, d = geometry.image_size, geometry.num_detectors
        # Ray samples one pixel apart, covering the diagonal of the bilinear support (N + 1 wide).
        self._num_ray_samples = math.ceil(math.sqrt(2.0) * (n + 1))
        angles = geometry.angles
        self._cos = torch.cos(angles).to(self.device, dtype)
        self._sin = torch.sin(angles).to(self.device, dtype)
        # Half-width of the image's shadow (pixel units): rays and bins beyond it sample only zeros.
        self._extent = (angles.cos().abs() + angles.sin().abs()) * (n + 1) / 2
        # grid_sample coordinates are normalised to [-1, 1] over the input's width.
        self._pixel_centres = (torch.arange(n, device=self.device, dtype=dtype) - (n - 1) / 2)
        self._detector_centres = (torch.arange(d, device=self.device, dtype=dtype) - (d - 1) / 2)
        t = self._num_ray_samples
        self._ray_samples = (torch.arange(t, device=self.device, dtype=dtype) - (t - 1) / 2)
        self._filters: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------- projection
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Project (B, H, W) or (B, 1, H, W) images at every view -> (B, views, detectors).

        With an even number of views, view v + V/2 (angle theta + pi/2) of the image is view v
        of the image turned by 90 degrees: both ride as channels of one ``grid_sample`` call,
        which halves the grids to build and shares the interpolation weights.
        """
        images = self._check_images(images, "images", allow_channel=True)
        batch, views, turns = images.shape[0], self.geometry.num_views, 1
        if views % 2 == 0:
            images = torch.stack([images, torch.rot90(images, 1, dims=(-2, -1))], dim=1).flatten(0, 1)
            views, turns = views // 2, 2
        chunks = []
        for chunk in self._view_chunks(torch.arange(views, device=self.device), images.shape[0]):
            expanded = images.unsqueeze(0).expand(len(chunk), *images.shape)
            chunks.append(self._run_chunk(self._project_chunk, expanded, chunk))
        sinogram = torch.cat(chunks, dim=1)  # (B * turns, views / turns, D)
        return sinogram.reshape(batch, turns * views, self.geometry.num_detectors)

    __call__ = forward

    def project_views(self, images: torch.Tensor,
                      view_indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Project image i at view ``view_indices[i]`` only: (V', H, W) -> (V', detectors).

        A leading batch axis is allowed: (B, V', H, W) -> (B, V', detectors). Without
        ``view_indices`` the images must cover all views in order. Projection is linear, so for
        a static scene plus a small moving object, project the static part once with
        ``forward`` and only the moving part per view; to bound memory, build the per-view
        images a block of views at a time and pass that block's indices.
        """
        if images.ndim not in (3, 4):
            raise ValueError("images must be (views, H, W) or (batch, views, H, W), "
                             f"got shape {tuple(images.shape)}")
        unbatched = images.ndim == 3
        stack = images.unsqueeze(0) if unbatched else images
        self._check_images(stack[:, 0], "images")
        count = stack.shape[1]
        if view_indices is None:
            if count != self.geometry.num_views:
                raise ValueError(f"without view_indices, images must hold one image per view "
                                 f"({self.geometry.num_views}), got {count}")
            views = torch.arange(count, device=self.device)
        else:
            views = torch.as_tensor(view_indices, device=self.device).reshape(-1)
            if views.dtype.is_floating_point or views.numel() != count:
                raise ValueError(f"view_indices must be {count} integers (one per image), got {view_indices!r}")
            if views.numel() and (views.min() < 0 or views.max() >= self.geometry.num_views):
                raise ValueError(f"view_indices must lie in [0, {self.geometry.num_views}), got {view_indices!r}")
        stack = stack.to(self.device, self.dtype).transpose(0, 1)  # (views, B, H, W)
        chunks, start = [], 0
        for chunk in self._view_chunks(views, stack.shape[1]):
            chunks.append(self._run_chunk(self._project_chunk, stack[start:start + len(chunk)], chunk))
            start += len(chunk)
        sinogram = torch.cat(chunks, dim=1)
        return sinogram[0] if unbatched else sinogram

    def _project_chunk(self, images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Line integrals of images (n, B, H, W), image j at view views[j] -> (B, n, D)."""
        n_img = self.geometry.image_size
        extent = float(self._extent[views.cpu()].max())
        bins = self._inside(self._detector_centres, extent)
        steps = self._inside(self._ray_samples, extent)
        s, t = self._detector_centres[bins], self._ray_samples[steps]
        cos, sin = self._cos[views, None], self._sin[views, None]
        s, t = s * (2.0 / n_img), t * (2.0 / n_img)
        # point = s (cos, sin) + t (-sin, cos): x and y each one broadcast add of two outer products.
        grid = torch.empty((len(views), t.numel(), s.numel(), 2), device=self.device, dtype=self.dtype)
        torch.add((-t * sin)[:, :, None], (s * cos)[:, None, :], out=grid[..., 0])
        torch.add((t * cos)[:, :, None], (s * sin)[:, None, :], out=grid[..., 1])
        samples = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        integrals = samples.sum(dim=2).transpose(0, 1) * self.geometry.pixel_size_mm  # (B, n, D')
        return F.pad(integrals, (bins.start, self.geometry.num_detectors - bins.stop))

    # ------------------------------------------------------------------------ reconstruction
    def filter_sinogram(self, sinogram: torch.Tensor, filter: str = "ram-lak") -> torch.Tensor:
        """Convolve every view with the windowed ramp filter (see ``ramp_filter``)."""
        sinogram = self._check_sinogram(sinogram)
        if filter not in self._filters:
            response = ramp_filter(self.geometry.num_detectors, self.geometry.pixel_size_mm, filter)
            self._filters[filter] = response.to(self.device, self.dtype)
        response = self._filters[filter]
        size = 2 * (response.numel() - 1)
        spectrum = torch.fft.rfft(sinogram, n=size, dim=-1) * response
        return torch.fft.irfft(spectrum, n=size, dim=-1)[..., : self.geometry.num_detectors]

    def backproject(self, sinogram: torch.Tensor) -> torch.Tensor:
        """(pi / V) * sum over views of p_v(x cos + y sin): (B, views, detectors) -> (B, H, W).

        Linear interpolation between bins; with a ramp-filtered sinogram this completes FBP.
        As in ``forward``, views theta and theta + pi/2 share one grid when V is even; the
        second half is summed on that grid and turned back by 90 degrees once at the end.
        """
        sinogram = self._check_sinogram(sinogram)
        batch, views, detectors = sinogram.shape
        turns = 2 if views % 2 == 0 else 1
        views //= turns
        # (views / turns, B * turns, 1, D): each view a one-row image, batch and turn as channels
        rows = sinogram.reshape(batch * turns, views, detectors).transpose(0, 1).unsqueeze(2)
        image, start = None, 0
        for chunk in self._view_chunks(torch.arange(views, device=self.device), rows.shape[1],
                                       per_view=self.geometry.image_size**2):
            part = self._run_chunk(self._backproject_chunk, rows[start:start + len(chunk)], chunk)
            image = part if image is None else image + part
            start += len(chunk)
        if turns == 2:
            halves = image.unflatten(0, (batch, 2))
            image = halves[:, 0] + torch.rot90(halves[:, 1], -1, dims=(-2, -1))
        return image * (math.pi / self.geometry.num_views)

    def _backproject_chunk(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Sum over the chunk of each view smeared back along its rays -> (B, H, W)."""
        xy = self._pixel_centres * (2.0 / self.geometry.num_detectors)
        cos, sin = self._cos[views, None], self._sin[views, None]
        n = self.geometry.image_size
        grid = torch.empty((len(views), n, n, 2), device=self.device, dtype=self.dtype)
        torch.add((xy * sin)[:, :, None], (xy * cos)[:, None, :], out=grid[..., 0])  # s = x cos + y sin
        grid[..., 1] = 0.0  # the only row of the (1 x D) "image" of each view
        return F.grid_sample(rows, grid, mode="bilinear", padding_mode="zeros", align_corners=False).sum(0)

    def fbp(self, sinogram: torch.Tensor, filter: str = "ram-lak") -> torch.Tensor:
        """Filtered back-projection: (B, views, detectors) line integrals -> (B, H, W) in 1/mm."""
        return self.backproject(self.filter_sinogram(sinogram, filter))

    # ----------------------------------------------------------------------------- plumbing
    def _view_chunks(self, views: torch.Tensor, batch: int, per_view: int | None = None) -> list[torch.Tensor]:
        """Split views so one chunk's grid and samples stay under ``chunk_bytes``."""
        if per_view is None:
            per_view = self._num_ray_samples * self.geometry.num_detectors
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        size = max(1, self.chunk_bytes // (per_view * (2 + batch) * itemsize))
        return list(torch.split(views, size))

    @staticmethod
    def _run_chunk(fn, tensor: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        # Under autograd, recompute the chunk in backward rather than keep its sampling grid.
        if torch.is_grad_enabled() and tensor.requires_grad:
            return checkpoint(fn, tensor, views, use_reentrant=False)
        return fn(tensor, views)

    @staticmethod
    def _inside(centres: torch.Tensor, extent: float) -> slice:
        """Symmetric index range of ``centres`` (centred, unit spaced) with |c| < extent."""
        size = centres.numel()
        first = max(0, math.ceil((size - 1) / 2 - extent))
        return slice(first, size - first)

    def _check_images(self, images: torch.Tensor, name: str, allow_channel: bool = False) -> torch.Tensor:
        if allow_channel and images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3:
            shapes = "(B, H, W) or (B, 1, H, W)" if allow_channel else "(B, H, W)"
            raise ValueError(f"{name} must be {shapes}, got shape {tuple(images.shape)}")
        n = self.geometry.image_size
        if images.shape[-2:] != (n, n):
            raise ValueError(f"{name} must be {n} x {n} to match the geometry, got {tuple(images.shape[-2:])}")
        return images.to(self.device, self.dtype)

    def _check_sinogram(self, sinogram: torch.Tensor) -> torch.Tensor:
        expected = (self.geometry.num_views, self.geometry.num_detectors)
        if sinogram.ndim != 3 or tuple(sinogram.shape[1:]) != expected:
            raise ValueError(f"sinogram must be (B, {expected[0]} views, {expected[1]} detectors), "
                             f"got shape {tuple(sinogram.shape)}")
        return sinogram.to(self.device, self.dtype)
