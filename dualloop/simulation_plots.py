"""Figures of the teaching walkthrough, drawn from :mod:`dualloop.simulation` results.

Figures are built without pyplot, so importing this module changes no backend."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dualloop.simulation import gradient_scale, margin_after_steps

__all__ = ["plot_gradient_scale", "plot_controller_trajectories", "plot_gradient_balance"]


def plot_gradient_scale(betas: list[float], margin_range: float = 6.0, push_steps: int = 60) -> Figure:
    """Eq. (1): gradient scale β·σ(−βM) against the margin, and the margin one pair reaches."""
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    margins = np.linspace(-margin_range, margin_range, 241)
    for beta in betas:
        left.plot(margins, gradient_scale(beta, margins), label=f"β = {beta:g}")
        right.plot(margin_after_steps(beta, push_steps), label=f"β = {beta:g}")
    left.axvline(0.0, color="grey", lw=0.8, ls=":")
    left.set(
        xlabel="implicit margin M",
        ylabel="‖∇L‖ / ‖∇M‖ = β σ(−βM)",
        title="Eq. (1): at M ≈ 0 the gradient is 0.5 β (laziness)",
    )
    right.set(
        xlabel="gradient steps",
        ylabel="margin M of one pair",
        title="One pair under eq. (1): large β jumps early (drift), small β crawls",
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_controller_trajectories(trajectories: dict[str, pd.DataFrame], kl_target: float, deadband: float) -> Figure:
    """β and batch KL per step for each controller on the same simulated statistics: the
    controllers that keep a β_base (DualLoop) on top with it, the others in the middle, KL below."""
    figure = Figure(figsize=(11, 10))
    loop_axis, beta_axis, kl_axis = figure.subplots(3, 1, sharex=True)
    colours = dict(zip(trajectories, matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name, frame in trajectories.items():
        colour = colours[name]
        if "kl_ema" in frame:
            loop_axis.plot(frame["step"], frame["beta"], color=colour, lw=0.9, label=f"{name}: β_total")
            loop_axis.plot(frame["step"], frame["beta/base"], color=colour, lw=1.6, ls="--", label=f"{name}: β_base")
            kl_axis.plot(frame["step"], frame["kl_ema"], color=colour, lw=1.6, label=f"{name} (KL_ema)")
        else:
            beta_axis.plot(frame["step"], frame["beta"], color=colour, lw=1.0, label=name)
        kl_axis.plot(frame["step"], frame["batch_kl"], color=colour, lw=0.6, alpha=0.6)
    first = next(iter(trajectories.values()))
    for axis in (loop_axis, beta_axis):
        for step in first.loc[first["uncertain"], "step"]:
            axis.axvline(step, color="orange", lw=0.4, alpha=0.4)
    kl_axis.axhspan(
        kl_target * (1 - deadband), kl_target * (1 + deadband), color="green", alpha=0.15, label="KL target ± dead-band"
    )
    loop_axis.set(ylabel="β", title="DualLoop: fast loop (β_total) and slow loop (β_base); orange: uncertain batches")
    beta_axis.set(ylabel="β used (mean over kept examples)", yscale="log", title="Baselines on the same statistics")
    kl_axis.set(
        xlabel="optimizer step",
        ylabel="KL (nats per token)",
        yscale="log",
        title="Batch KL (thin) and DualLoop's KL_ema (thick)",
    )
    for axis in (loop_axis, beta_axis, kl_axis):
        axis.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    return figure


def plot_gradient_balance(balance: pd.DataFrame) -> Figure:
    """|∂L/∂P_w| / |∂L/∂P_l| against P_w/P_l for DPO and AdaDPO (Chen et al., eqs. 2 and 8)."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    ratio = balance["P_w"] / balance["P_l"]
    for column in [c for c in balance.columns if c.endswith("|dL/dP_l|")]:
        axis.plot(ratio, balance[column], marker="o", label=column.split(" ")[0])
    axis.axhline(1.0, color="grey", lw=0.8, ls=":")
    axis.set(
        xscale="log",
        yscale="log",
        xlabel="P_w / P_l",
        ylabel="|∂L/∂P_w| / |∂L/∂P_l|",
        title="Gradient balance: DPO vs AdaDPO",
    )
    axis.legend()
    figure.tight_layout()
    return figure
