"""Draw adaptation curves (reports/curves.py) as one PNG and one SVG figure per task.

Uses matplotlib's object API with the Agg canvas, so nothing depends on a display or on
pyplot's global state. Six panels share the x axis (tokens since the injection); colour = model
and injection point, solid = injection, dashed = the length-matched noise control, shaded = the
bootstrap interval of the injection run (the noise run's is lighter).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .curves import CurveKey

PANELS = {
    "adaptation_score": ("Adaptation score a_t", "a_t  (0 = follows old problem, 1 = new)"),
    "adapted_share": ("Share of problems adapted at t", "share with a_t > threshold"),
    "kl_run_new": ("Divergence from the new-problem context", "KL(run || new)  [nats]"),
    "kl_run_old": ("Divergence from the old-problem context", "KL(run || old)  [nats]"),
    "attention_injected": ("Attention on the injected segment", "attention mass (sink removed)"),
    "attention_original": ("Attention on the original prompt", "attention mass (sink removed)"),
}
LINESTYLES = {"injection": "-", "noise": "--"}


def draw_curves(curves: dict[CurveKey, dict], title: str, stem: str | Path,
                adapted_threshold: float = 0.5, confidence_level: float = 0.95) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg``; returns their paths."""
    figure = Figure(figsize=(15, 9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3, sharex=True).ravel()
    lines = sorted({(key.model, key.point) for key in curves})
    colours = {line: f"C{index % 10}" for index, line in enumerate(lines)}
    several_models = len({model for model, _ in lines}) > 1
    for ax, (series, (panel_title, ylabel)) in zip(axes, PANELS.items()):
        drawn = False
        for key, bands in sorted(curves.items(), key=lambda item: (item[0].model, item[0].point, item[0].kind)):
            band = bands.get(series)
            if band is None or band.mean.size == 0:
                continue
            colour = colours[(key.model, key.point)]
            ax.plot(band.tokens, band.mean, LINESTYLES[key.kind], color=colour, linewidth=1.6)
            ax.fill_between(band.tokens, band.low, band.high, color=colour, linewidth=0,
                            alpha=0.18 if key.kind == "injection" else 0.08)
            drawn = True
        if series == "adaptation_score":
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        if series == "adapted_share":
            ax.set_title(f"{panel_title} (threshold {adapted_threshold:g})", fontsize=11)
        else:
            ax.set_title(panel_title, fontsize=11)
        if not drawn:
            ax.text(0.5, 0.5, "not in the traces\n(attention not tracked?)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in axes[3:]:
        ax.set_xlabel("tokens generated since the injection (t)")
    handles = [Line2D([], [], color=colours[line], linewidth=2,
                      label=(f"{line[0]}, " if several_models else "") + f"injected after N={line[1]} tokens")
               for line in lines]
    handles += [Line2D([], [], color="black", linestyle=style,
                       label="injection (the new problem)" if kind == "injection" else "noise control (same length)")
                for kind, style in LINESTYLES.items()]
    # Labels that name the model are long: three columns keep the legend inside the figure's width.
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3 if several_models else 4),
                  fontsize=9 if several_models else None, frameon=False)
    level = f"{confidence_level:.0%}"
    figure.suptitle(f"{title}\nmean over changed problems; shaded: {level} bootstrap interval over problems",
                    fontsize=13)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    _save_small_png(figure, paths[0])
    # No date and fixed element ids: the same curves give the same SVG bytes, so a committed
    # figure changes only when its data do.
    with rc_context({"svg.hashsalt": "kvinject"}):
        figure.savefig(paths[1], metadata={"Date": None})
    return paths


def _save_small_png(figure: Figure, path: Path, dpi: int = 90, colours: int = 128) -> None:
    """PNG with a 128-colour palette: a third of the size of full colour, no visible difference
    for line plots (Pillow is a dependency of matplotlib)."""
    from PIL import Image

    figure.set_dpi(dpi)
    canvas = figure.canvas
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
