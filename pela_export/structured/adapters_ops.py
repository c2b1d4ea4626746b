"""The structured matrices behind the adapters, each three ways: materialised (for
``effective_weight`` and tests), applied by FFT (training, where the structure is
*defined* by a convolution), and applied by DFT-free ONNX ops (deployment).

Why a Conv and not a DFT for deployment: TensorRT <= 10 has no DFT layer, while a
circulant / skew-circulant / Toeplitz mat-vec is exactly a 1-D convolution of the
input with the defining vector, which every runtime has. The wrap-around of a
circular (or negacyclic) convolution is made explicit by extending the input on
the left with its own tail (negated for skew-circulant), then a plain ``Conv``
with the flipped vector as its kernel.

Conventions (n = vector length, rows i, columns j):
circulant ``C[i, j] = c[(i-j) mod n]``; skew-circulant ``S[i, j] = h[i-j]`` for i >= j and
``-h[i-j+n]`` for i < j; Toeplitz (out x in) ``T[i, j] = t[i-j+in-1]`` (t has out+in-1 values).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _diff(n: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(n, device=device)
    return idx[:, None] - idx[None, :]


def circulant_matrix(c: torch.Tensor) -> torch.Tensor:
    """``(..., n)`` defining vectors → ``(..., n, n)`` circulant matrices."""
    return c[..., _diff(c.shape[-1], c.device) % c.shape[-1]]


def skew_circulant_matrix(h: torch.Tensor) -> torch.Tensor:
    """``(..., n)`` defining vectors → ``(..., n, n)`` skew-circulant matrices."""
    d = _diff(h.shape[-1], h.device)
    sign = torch.where(d >= 0, 1.0, -1.0).to(h.dtype)
    return h[..., d % h.shape[-1]] * sign


def toeplitz_matrix(t: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """``out+in-1`` values → the ``out x in`` Toeplitz matrix (constant along diagonals)."""
    i = torch.arange(out_features, device=t.device)[:, None]
    j = torch.arange(in_features, device=t.device)[None, :]
    return t[i - j + in_features - 1]


def block_circulant_matrix(c: torch.Tensor) -> torch.Tensor:
    """``(p, q, b)`` → the ``(p·b) x (q·b)`` matrix of p×q circulant blocks."""
    p, q, b = c.shape
    return circulant_matrix(c).permute(0, 2, 1, 3).reshape(p * b, q * b)


# --- FFT forms (training) -------------------------------------------------------------------

def block_circulant_fft(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x (..., q·b)`` → ``(..., p·b)``: every block a circular convolution, summed in frequency."""
    p, q, b = c.shape
    xf = torch.fft.rfft(x.reshape(*x.shape[:-1], q, b), dim=-1)
    yf = torch.einsum("...qf,pqf->...pf", xf, torch.fft.rfft(c, dim=-1))
    return torch.fft.irfft(yf, n=b, dim=-1).reshape(*x.shape[:-1], p * b)


def toeplitz_fft(t: torch.Tensor, x: torch.Tensor, out_features: int) -> torch.Tensor:
    """Toeplitz mat-vec as a zero-padded (linear) FFT convolution, then the ``out`` valid taps."""
    in_features = x.shape[-1]
    n = t.shape[-1] + in_features - 1
    full = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(t, n=n), n=n)
    return full[..., in_features - 1:in_features - 1 + out_features]


def ldr_fft(g: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_k Circ(g_k)·SkewCirc(h_k)·x`` for ``x (..., n)``: negacyclic then circular convolutions.

    The negacyclic product is a linear convolution of length 2n folded with a minus sign
    (``z[:n] - z[n:]``), so only real FFTs are needed.
    """
    n = x.shape[-1]
    z = torch.fft.irfft(torch.fft.rfft(x, n=2 * n).unsqueeze(-2) * torch.fft.rfft(h, n=2 * n), n=2 * n)
    u = z[..., :n] - z[..., n:]
    return torch.fft.irfft((torch.fft.rfft(u, n=n) * torch.fft.rfft(g, n=n)).sum(-2), n=n)


# --- DFT-free deployment modules ------------------------------------------------------------

def _wrap(z: torch.Tensor, negate: bool) -> torch.Tensor:
    """Extend ``(N, C, n)`` on the left by its last n-1 samples (negated: negacyclic)."""
    if z.shape[-1] == 1:
        return z
    tail = z[..., 1:]
    return torch.cat([-tail if negate else tail, z], dim=-1)


class BlockCirculantConv(nn.Module):
    """x·ΔWᵀ for a block-circulant ΔW as one Conv over q input / p output channels."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.p, self.q, self.b = c.shape
        self.weight = nn.Parameter(c.detach().flip(-1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _wrap(x.reshape(-1, self.q, self.b), negate=False)
        return F.conv1d(z, self.weight).reshape(*x.shape[:-1], self.p * self.b)


class BlockCirculantFFT(nn.Module):
    """The FFT form, deployed only when DFT ops are allowed (spectrum of c precomputed).

    Complex arithmetic is spelled out on real/imaginary parts: the dynamo exporter maps
    rfft/irfft and element-wise complex products to DFT, but no einsum/sum on complex values.
    """

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.p, self.q, self.b = c.shape
        re, im = _spectrum(c.detach(), self.b)
        self.register_buffer("c_re", re)
        self.register_buffer("c_im", im)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xr, xi = _spectrum(x.reshape(-1, self.q, self.b), self.b)
        yr = torch.einsum("nqf,pqf->npf", xr, self.c_re) - torch.einsum("nqf,pqf->npf", xi, self.c_im)
        yi = torch.einsum("nqf,pqf->npf", xr, self.c_im) + torch.einsum("nqf,pqf->npf", xi, self.c_re)
        return _inverse(yr, yi, self.b).reshape(*x.shape[:-1], self.p * self.b)


def _spectrum(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``rfft(x, n)`` along the last dim."""
    f = torch.view_as_real(torch.fft.rfft(x, n=n, dim=-1))
    return f[..., 0], f[..., 1]


def _inverse(re: torch.Tensor, im: torch.Tensor, n: int) -> torch.Tensor:
    return torch.fft.irfft(torch.view_as_complex(torch.stack([re, im], dim=-1)), n=n, dim=-1)


class ToeplitzConv(nn.Module):
    """x·Tᵀ as a single-channel Conv with zero padding out-1 on both sides (kernel out+in-1)."""

    def __init__(self, t: torch.Tensor, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features
        self.weight = nn.Parameter(t.detach().flip(-1).clone().reshape(1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.conv1d(x.reshape(-1, 1, x.shape[-1]), self.weight, padding=self.out_features - 1)
        return z.reshape(*x.shape[:-1], self.out_features)


class KroneckerMatMul(nn.Module):
    """x·(A⊗B)ᵀ = vec_row(A·X·Bᵀ) with X the ``i1 x i2`` view of x: two MatMuls and reshapes."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.detach().clone())
        self.b_t = nn.Parameter(b.detach().t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kronecker_apply(self.a, self.b_t, x)


def kronecker_apply(a: torch.Tensor, b_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(..., i1·i2)`` → ``(..., o1·o2)`` given A ``(o1, i1)`` and Bᵀ ``(i2, o2)``.

    Row-major reshapes, so this is vec_row(A·X·Bᵀ) — the same product as the textbook
    column-major (A⊗B)·vec(X') = vec(B·X'·Aᵀ) with X' = Xᵀ.
    """
    (o1, i1), (i2, o2) = a.shape, b_t.shape
    z = torch.matmul(a, x.reshape(-1, i1, i2))
    return torch.matmul(z, b_t).reshape(*x.shape[:-1], o1 * o2)


class LDRConv(nn.Module):
    """``Σ_k Circ(g_k)·SkewCirc(h_k)`` on the zero-padded input as two Convs (r channels between).

    Non-square layers: the input is zero-padded to n = max(out, in) and the first ``out``
    outputs are kept (ΔW is the top-left block of an n×n LDR matrix).
    """

    def __init__(self, g: torch.Tensor, h: torch.Tensor, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.n = in_features, out_features, g.shape[-1]
        self.skew = nn.Parameter(h.detach().flip(-1).clone().unsqueeze(1))  # (r, 1, n)
        self.circ = nn.Parameter(g.detach().flip(-1).clone().unsqueeze(0))  # (1, r, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(-1, 1, self.in_features)
        if self.n > self.in_features:
            z = F.pad(z, (0, self.n - self.in_features))
        u = F.conv1d(_wrap(z, negate=True), self.skew)
        y = F.conv1d(_wrap(u, negate=False), self.circ)[..., :self.out_features]
        return y.reshape(*x.shape[:-1], self.out_features)


class LDRFFT(nn.Module):
    """The FFT form of an LDR delta, deployed only when DFT ops are allowed (spectra precomputed)."""

    def __init__(self, g: torch.Tensor, h: torch.Tensor, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.n = in_features, out_features, g.shape[-1]
        for name, (re, im) in (("g", _spectrum(g.detach(), self.n)), ("h", _spectrum(h.detach(), 2 * self.n))):
            self.register_buffer(f"{name}_re", re)
            self.register_buffer(f"{name}_im", im)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        z = x.reshape(-1, 1, self.in_features)
        xr, xi = _spectrum(z, 2 * n)  # (N, 1, f2): zero-padding to 2n is rfft's own
        z = _inverse(xr * self.h_re - xi * self.h_im, xr * self.h_im + xi * self.h_re, 2 * n)
        ur, ui = _spectrum(z[..., :n] - z[..., n:], n)  # (N, r, f)
        yr = (ur * self.g_re - ui * self.g_im).sum(1)
        yi = (ur * self.g_im + ui * self.g_re).sum(1)
        return _inverse(yr, yi, n)[..., :self.out_features].reshape(*x.shape[:-1], self.out_features)


def ldr_apply_fft(g: torch.Tensor, h: torch.Tensor, x: torch.Tensor, out_features: int) -> torch.Tensor:
    """Pad ``x`` to n, apply the LDR sum by FFT, keep the first ``out_features`` outputs."""
    n = g.shape[-1]
    if x.shape[-1] < n:
        x = F.pad(x, (0, n - x.shape[-1]))
    return ldr_fft(g, h, x)[..., :out_features]


def ldr_matrix(g: torch.Tensor, h: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Materialised ``(Σ_k Circ(g_k)·SkewCirc(h_k))[:out, :in]``."""
    full = (circulant_matrix(g) @ skew_circulant_matrix(h)).sum(0)
    return full[:out_features, :in_features]
