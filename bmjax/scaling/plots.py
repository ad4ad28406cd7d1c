"""The four pictures of a scaling-law fit, as PNG files (matplotlib, Agg backend: no display needed).

    loss_vs_compute.png     every run's loss against its compute, the loss envelope (approach 1) drawn through
    isoflop.png             loss against N per compute level, each level's parabola and its minimum (approach 2)
    fitted_law.png          the runs against N, coloured by compute, with the fitted L(N, C / 6N) per level
    optimal_allocation.png  N_opt(C) and D_opt(C) of the fitted allocation, with the runs on the envelope and
                            the IsoFLOP minima
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bmjax.scaling.allocation import SIX_ND  # noqa: E402
from bmjax.scaling.isoflop import compute_levels, isoflop_profiles  # noqa: E402

FILES = ("loss_vs_compute.png", "isoflop.png", "fitted_law.png", "optimal_allocation.png")


def write_plots(directory: str, points, *, law=None, allocation=None, frontier=None, width: float = 0.1,
                isoflop_window: float | None = None, compute=SIX_ND, title: str = "") -> list[str]:
    """Write the four PNGs into `directory`; returns their paths. `law(n, d)` and `allocation` may be None;
    `isoflop_window` as in bmjax.scaling.isoflop (each parabola drawn over the sizes it was fitted on)."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in FILES]
    levels = compute_levels(points, width)
    level_c = np.array([level.c for level in levels])
    # A level's colour is its compute on the same scale as the runs' colour bar in fitted_law.png.
    norm = matplotlib.colors.Normalize(np.log10(points.c.min()), np.log10(points.c.max()))
    colours = plt.cm.viridis(norm(np.log10(level_c)))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(points.c, points.loss, s=12, c="0.6", label="runs")
    if frontier is not None and len(frontier):
        ax.plot(points.c[frontier], points.loss[frontier], "o-", c="C3", ms=4, label="loss envelope")
    _finish(ax, "training FLOPs C", "loss", title, log_y=True)
    _save(fig, paths[0])

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for level, colour in zip(levels, colours):
        ax.scatter(points.n[level.runs], points.loss[level.runs], s=12, color=colour)
    for profile in isoflop_profiles(points, width, isoflop_window):
        if profile.coeffs is None:
            continue
        colour = colours[np.argmin(np.abs(level_c - profile.c))]
        n = points.n[profile.runs]
        x = np.linspace(np.log(n.min()), np.log(n.max()), 100)
        ax.plot(np.exp(x), np.polyval(profile.coeffs, x), color=colour, lw=1, label=f"C = {profile.c:.1e}")
        if profile.n_opt is not None:
            ax.plot(profile.n_opt, np.polyval(profile.coeffs, np.log(profile.n_opt)), "*", ms=11, color=colour,
                    mec="k")
    _finish(ax, "parameters N", "loss", title + " (IsoFLOP profiles)", legend_size=6)
    _save(fig, paths[1])

    fig, ax = plt.subplots(figsize=(6, 4.5))
    scatter = ax.scatter(points.n, points.loss, s=12, c=np.log10(points.c), cmap="viridis", norm=norm)
    fig.colorbar(scatter, ax=ax, label="log10 C")
    if law is not None:
        shown = np.unique(np.linspace(0, len(levels) - 1, min(len(levels), 8)).round().astype(int))
        for i in shown:
            n = np.geomspace(points.n.min() / 2, points.n.max() * 2, 200)
            ax.plot(n, law(n, compute.tokens(n, level_c[i])), color=colours[i], lw=1)
    _finish(ax, "parameters N", "loss", title + " (fitted law at each level's C)", log_y=True, legend=False)
    _save(fig, paths[2])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    c_range = np.geomspace(points.c.min(), max(points.c.max() * 1e3, 1e25), 100)
    minima = [p for p in isoflop_profiles(points, width, isoflop_window) if p.n_opt is not None]
    for ax, name, pick in ((axes[0], "N_opt", lambda al: al.n_opt), (axes[1], "D_opt", lambda al: al.d_opt)):
        if allocation is not None:
            ax.plot(c_range, pick(allocation)(c_range), c="C0", label=f"fit: ∝ C^{allocation.a if name == 'N_opt' else allocation.b:.3f}")
        if frontier is not None and len(frontier):
            y = points.n[frontier] if name == "N_opt" else points.d[frontier]
            ax.scatter(points.c[frontier], y, c="C3", s=14, label="loss envelope")
        if minima:
            c = np.array([p.c for p in minima])
            n = np.array([p.n_opt for p in minima])
            d = np.array([p.d_opt for p in minima])
            ax.scatter(c, n if name == "N_opt" else d, marker="*", c="C2", s=40, label="IsoFLOP minima")
        _finish(ax, "training FLOPs C", name, title, log_y=True)
    _save(fig, paths[3])
    return paths


def _finish(ax, xlabel, ylabel, title, *, log_y=False, legend=True, legend_size=8):
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
