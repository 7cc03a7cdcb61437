"""Deblurring: motion (``motion_deblurring``) and defocus (``defocus_deblurring``).

Both are non-blind deconvolutions (FFT, gradient prior, tapered edges) with the benchmark's own
kernel families (:func:`motion_kernel`, :func:`defocus_kernel`) and blindly estimated parameters.

Kernel parameters are fitted to the image's power spectrum (:class:`_SpectrumFit`): a natural
image has a roughly isotropic spectrum ``S(|w|)``, so the blurred spectrum is modelled as
``|K(w)|^2 S(|w|) + N0`` (``N0`` = the larger of 8-bit rounding and the estimated noise) and the
candidate kernel with the smallest log-spectral misfit wins. For motion blur this finds the angle (coarse 3-degree grid, then
1-degree refinement) and the ``(radius, sigma)`` pair together; for defocus, the disk radius.
The fit is least reliable on small crops dominated by straight horizontal/vertical structure.
The Wiener regularisation grows with the estimated noise (:func:`noise_aware_reg`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from agentir.toolbox.tools._common import NumpyTool, defocus_kernel, estimate_noise_sigma, motion_kernel, pad_taper, psf2otf, wiener_deconv

#: The recipe's (radius, sigma) pairs, levels low .. very_high.
MOTION_CANDIDATES: tuple[tuple[int, float], ...] = ((5, 2.0), (10, 3.0), (15, 5.0), (15, 8.0))
#: Kernel sizes the motion estimator tries: no blur (identity), the ~4x smaller blur a motion
#: blur leaves after the benchmark's x4 downscale (motion_blur + low_resolution), the recipe's.
MOTION_SEARCH: tuple[tuple[int, float], ...] = ((0, 1.0), (2, 0.75), (3, 1.25)) + MOTION_CANDIDATES
#: The recipe's (radius, alias) pairs, levels low .. very_high.
DEFOCUS_CANDIDATES: tuple[tuple[int, float], ...] = ((2, 0.1), (3, 0.1), (4, 0.5), (6, 0.5))


_TILE = 64


def _welch_spectrum(g: np.ndarray, tile: int = _TILE) -> tuple[np.ndarray, float]:
    """Averaged Hann-windowed periodogram of ``tile x tile`` half-overlapping tiles (rfft layout).

    Returns the spectrum and the window energy (to scale the white-noise floor).
    """
    h, w = g.shape
    if h < tile or w < tile:  # small images: one mirrored tile
        g = np.pad(g, ((0, max(0, tile - h)), (0, max(0, tile - w))), mode="symmetric")
        h, w = g.shape
    win = np.outer(np.hanning(tile), np.hanning(tile))
    acc = np.zeros((tile, tile // 2 + 1))
    n = 0
    # Small images: quarter-overlapping tiles for a less noisy spectrum.
    step = tile // 2 if h * w >= 4 * tile * tile * 4 else tile // 4
    for y in range(0, h - tile + 1, step):
        for x in range(0, w - tile + 1, step):
            t = g[y : y + tile, x : x + tile]
            acc += np.abs(np.fft.rfft2((t - t.mean()) * win)) ** 2
            n += 1
    return acc / max(n, 1), float((win**2).sum())


class _SpectrumFit:
    """Misfit of candidate kernels to an image's power spectrum (see the module docstring)."""

    def __init__(self, img: np.ndarray, tile: int = _TILE, nbins: int = 12) -> None:
        g = img.mean(axis=2).astype(np.float64)
        self.tile = tile
        self.power, wsum = _welch_spectrum(g, tile)
        # White-noise floor of the grey image: 8-bit rounding or the estimated noise, whichever
        # is larger, averaged over 3 channels.
        var = max(1.0 / (12.0 * 255.0**2), estimate_noise_sigma(img) ** 2)
        self.n0 = wsum * var / 3.0
        fy = np.fft.fftfreq(tile)[:, None]
        fx = np.fft.rfftfreq(tile)[None, :]
        rad = np.sqrt(fy * fy + fx * fx)
        bins = np.minimum((rad / 0.5 * nbins).astype(np.int64), nbins)
        keep = (rad > 0.04) & (rad < 0.5)
        self.groups = [np.nonzero(((bins == b) & keep).ravel())[0] for b in range(nbins)]
        self.groups = [gidx for gidx in self.groups if gidx.size]
        self.logp = [np.log(self.power.ravel()[gidx] + 1e-20) for gidx in self.groups]
        self.pw = [self.power.ravel()[gidx] for gidx in self.groups]
        self.idx = np.nonzero(keep.ravel())[0]
        self.rad_flat = rad.ravel()[self.idx]
        self.p_flat = self.power.ravel()[self.idx]
        self.logp_flat = np.log(self.p_flat + 1e-20)

    def misfit_powerlaw(self, kernel: np.ndarray) -> float:
        """Misfit with a power-law image spectrum ``C |w|^-b`` (``b`` in 1.5..3.5) instead of a free
        radial profile: an isotropic blur would otherwise be absorbed into the profile."""
        k2 = np.maximum((np.abs(psf2otf(kernel, (self.tile, self.tile))) ** 2).ravel()[self.idx], 1e-4)
        best = float("inf")
        for b in (1.5, 2.0, 2.5, 3.0, 3.5):
            shape = k2 * self.rad_flat ** (-b)
            c = np.median(np.maximum(self.p_flat - self.n0, 0.1 * self.n0) / shape)
            err = float(np.sum((self.logp_flat - np.log(shape * c + self.n0)) ** 2))
            best = min(best, err)
        return best

    def misfit(self, kernel: np.ndarray) -> float:
        k2 = (np.abs(psf2otf(kernel, (self.tile, self.tile))) ** 2).ravel()
        err = 0.0
        for gidx, logp, pw in zip(self.groups, self.logp, self.pw):
            kk = np.maximum(k2[gidx], 1e-4)
            s = np.median(np.maximum(pw - self.n0, 0.1 * self.n0) / kk)
            err += float(np.sum((logp - np.log(kk * s + self.n0)) ** 2))
        return err


def estimate_motion(img: np.ndarray, candidates: tuple[tuple[int, float], ...] = MOTION_SEARCH) -> tuple[float, int, float]:
    """Blind estimate ``(angle_deg, radius, sigma)`` of the recipe's motion blur in ``img``.

    The angle is in ``[-90, 90)`` (x right, y down), the recipe's convention.
    """
    fit = _SpectrumFit(img)
    best = (float("inf"), 0.0, candidates[0])
    for angle in np.arange(-90.0, 90.0, 3.0):
        for cand in candidates:
            e = fit.misfit(motion_kernel(cand[0], cand[1], float(angle)))
            if e < best[0]:
                best = (e, float(angle), cand)
    _, a0, _ = best
    for angle in np.arange(a0 - 2.0, a0 + 2.01, 1.0):
        for cand in candidates:
            e = fit.misfit(motion_kernel(cand[0], cand[1], float(angle)))
            if e < best[0]:
                best = (e, float(angle), cand)
    _, angle, (radius, sigma) = best
    angle = ((angle + 90.0) % 180.0) - 90.0
    return angle, radius, sigma


#: Noise below this sigma (8-bit rounding, texture leaking into the estimate) adds no regularisation.
_NOISE_FLOOR = 2.0 / 255.0


def noise_aware_reg(img: np.ndarray, reg: float, noise_weight: float) -> float:
    """``reg + noise_weight * excess_sigma^2``: deconvolve noisy inputs more cautiously."""
    excess = max(0.0, estimate_noise_sigma(img) - _NOISE_FLOOR)
    return reg + noise_weight * excess * excess


class WienerMotionDeblur(NumpyTool):
    """Blind motion deblurring: spectrum-fitted recipe kernel, gradient-regularised Wiener.

    Args:
        name: registry name.
        reg: weight of the gradient prior (larger = smoother, less ringing when the estimate is off).
        candidates: ``(radius, sigma)`` kernel sizes to choose from.
        noise_weight: extra regularisation per unit of estimated noise variance (see
            :func:`noise_aware_reg`).
    """

    degradation = "motion_blur"

    def __init__(
        self,
        name: str = "wiener_motion_deblur",
        *,
        reg: float = 2e-3,
        candidates: tuple[tuple[int, float], ...] = MOTION_SEARCH,
        noise_weight: float = 100.0,
    ) -> None:
        self.name = name
        self.reg = reg
        self.candidates = candidates
        self.noise_weight = noise_weight

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """The blur kernel (``angle``, ``radius``, ``sigma``) and the noise-aware ``reg``."""
        angle, radius, sigma = estimate_motion(img, self.candidates)
        return {"angle": float(angle), "radius": float(radius), "sigma": float(sigma), "reg": noise_aware_reg(img, self.reg, self.noise_weight)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        # A smoothed radius is rounded back to the recipe's integer kernel lengths.
        kernel = motion_kernel(int(round(float(params["radius"]))), float(params["sigma"]), float(params["angle"]))
        return wiener_deconv(img, kernel, float(params["reg"]))


def richardson_lucy(img: np.ndarray, kernel: np.ndarray, iterations: int) -> np.ndarray:
    """Richardson-Lucy deconvolution of ``H x W x C`` in ``[0, 1]`` (FFT, tapered edges).

    Multiplicative updates keep the estimate non-negative; fewer iterations = more conservative.
    """
    kh, kw = kernel.shape
    pad = max(kh, kw)
    y = np.clip(pad_taper(img, pad), 1e-4, None).astype(np.float64)
    hh, ww = y.shape[:2]
    otf = psf2otf(kernel, (hh, ww))
    out = np.empty_like(y)
    for c in range(y.shape[2]):
        yc = y[..., c]
        x = yc.copy()
        for _ in range(iterations):
            blurred = np.fft.irfft2(np.fft.rfft2(x) * otf, s=(hh, ww))
            ratio = yc / np.maximum(blurred, 1e-4)
            x = x * np.fft.irfft2(np.fft.rfft2(ratio) * np.conj(otf), s=(hh, ww))
        out[..., c] = x
    return out[pad : pad + img.shape[0], pad : pad + img.shape[1]].astype(np.float32)


class RLMotionDeblur(NumpyTool):
    """Blind motion deblurring: the same spectrum-fitted kernel, Richardson-Lucy iterations.

    A different character from the Wiener tools: no ringing-prone inverse filter, positivity
    kept, sharpening limited by the iteration count (halved on noisy inputs).
    """

    degradation = "motion_blur"

    def __init__(self, name: str = "rl_motion_deblur", *, iterations: int = 20, candidates: tuple[tuple[int, float], ...] = MOTION_SEARCH) -> None:
        self.name = name
        self.iterations = iterations
        self.candidates = candidates

    def process(self, img: np.ndarray) -> np.ndarray:
        angle, radius, sigma = estimate_motion(img, self.candidates)
        noisy = estimate_noise_sigma(img) > 4.0 / 255.0
        return richardson_lucy(img, motion_kernel(radius, sigma, angle), self.iterations // 2 if noisy else self.iterations)


#: Radii tried by the defocus estimator: no blur (identity), the small blur left after a x4
#: downscale (defocus_blur + low_resolution), the recipe's radii and the gap between them.
DEFOCUS_SEARCH: tuple[tuple[float, float], ...] = ((0, 0.1), (1.0, 0.3), (1.5, 0.3), (2, 0.1), (3, 0.1), (4, 0.5), (5, 0.5), (6, 0.5))


def estimate_defocus(img: np.ndarray, candidates: tuple[tuple[float, float], ...] = DEFOCUS_SEARCH) -> tuple[float, float]:
    """Blind estimate ``(radius, alias)`` of the recipe's defocus blur in ``img`` (spectrum fit)."""
    fit = _SpectrumFit(img)
    errs = [fit.misfit_powerlaw(defocus_kernel(r, a)) for r, a in candidates]
    return candidates[int(np.argmin(errs))]


class WienerDefocusDeblur(NumpyTool):
    """Defocus deblurring: the recipe's disk+Gaussian kernel at an estimated (or fixed) radius.

    Args:
        name: registry name.
        reg: weight of the gradient prior.
        radius: fixed ``(radius, alias)``; ``None`` estimates it from the spectrum.
        noise_weight: extra regularisation per unit of estimated noise variance.
    """

    degradation = "defocus_blur"

    def __init__(
        self,
        name: str = "wiener_defocus_deblur",
        *,
        reg: float = 2e-3,
        radius: tuple[float, float] | None = None,
        noise_weight: float = 100.0,
    ) -> None:
        self.name = name
        self.noise_weight = noise_weight
        self.reg = reg
        self.radius = radius

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """The disk kernel (``radius``, ``alias``) and the noise-aware ``reg``."""
        radius, alias = self.radius if self.radius is not None else estimate_defocus(img)
        return {"radius": float(radius), "alias": float(alias), "reg": noise_aware_reg(img, self.reg, self.noise_weight)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        return wiener_deconv(img, defocus_kernel(float(params["radius"]), float(params["alias"])), float(params["reg"]))
