"""The FFT path of correlate2d for large kernels: overlap-save over tiles with numpy.fft, tiles in threads.

numpy's FFT releases the GIL, so tiles run in parallel; transform sizes are 5-smooth (2^a 3^b 5^c), where
pocketfft is fastest. The padded image is made by ``numpy.pad`` itself, so every border mode is exact.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TILE = 256  # target transform size per axis: cache-sized tiles were fastest (benchmarks/methods.py)


def next_fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def correlate_fft(x, k, out, stride, dilation, pads, border, cval):
    """``out (Ho, Wo, C)`` = correlation of ``x (H, W, C)`` with ``k``, padded by ``pads`` with ``border``."""
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = pads
    kh, kw = k.shape
    kd = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1), k.dtype)
    kd[::dh, ::dw] = k
    KH, KW = kd.shape
    H, W, C = x.shape
    Hp, Wp = H + top + bottom, W + left + right
    Hf, Wf = Hp - KH + 1, Wp - KW + 1  # stride-1 output size
    Fh = next_fast_len(min(Hp, max(TILE, 2 * KH)))
    Fw = next_fast_len(min(Wp, max(TILE, 2 * KW)))
    Th, Tw = Fh - KH + 1, Fw - KW + 1
    ctype = np.complex64 if x.dtype == np.float32 else np.complex128
    kf = np.fft.rfft2(kd[::-1, ::-1], s=(Fh, Fw)).astype(ctype, copy=False)
    full = out if (sh, sw) == (1, 1) else np.empty((Hf, Wf, C), x.dtype)
    kw_pad = {"constant_values": cval} if border == "constant" else {}
    tiles = [(c, i, j) for c in range(C) for i in range(0, Hf, Th) for j in range(0, Wf, Tw)]
    planes = [np.pad(x[:, :, c], ((top, bottom), (left, right)), mode=border, **kw_pad) for c in range(C)]

    def run(tile):
        c, i, j = tile
        block = planes[c][i : i + Fh, j : j + Fw]
        spec = np.fft.rfft2(block, s=(Fh, Fw))
        spec *= kf
        res = np.fft.irfft2(spec, s=(Fh, Fw))
        h, w = min(Th, Hf - i), min(Tw, Wf - j)
        full[i : i + h, j : j + w, c] = res[KH - 1 : KH - 1 + h, KW - 1 : KW - 1 + w]

    if len(tiles) == 1:
        run(tiles[0])
    else:
        with ThreadPoolExecutor(min(_threads(), len(tiles))) as pool:
            list(pool.map(run, tiles))
    if full is not out:
        out[...] = full[::sh, ::sw]
