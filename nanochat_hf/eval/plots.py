"""Training curves for the report card: one PNG per metric, against steps, tokens and training time.

Read from the Trainer's `log_history` (trainer_state.json). The time axis is training time: each log
entry's `step_seconds` (the mean step time since the previous log, `ThroughputCallback`) times the
steps since then, accumulated, so validation passes and checkpoint writes are not counted. Tokens are the
logged `tokens` (steps x tokens per step). A metric that was never logged still gets its PNG, saying so
(MFU, for one, is only logged where the GPU's peak is known).
"""

import os
import tempfile
from pathlib import Path


PLOTTED = {  # log key -> (file stem, title)
    "loss": ("report_loss", "training loss"),
    "val_bpb": ("report_val_bpb", "validation bits per byte"),
    "mfu_percent": ("report_mfu", "MFU (%)"),
}
X_AXES = (("steps", "step"), ("tokens", "tokens"), ("seconds", "training time (s)"))
NOT_LOGGED_REASON = {
    "mfu_percent": "MFU was not logged: the device's peak FLOP/s is unknown (e.g. a CPU run)",
    "val_bpb": "val_bpb was not logged (eval_every was 0)",
}


def training_time_by_step(log_history: list[dict]) -> dict[int, float]:
    """Cumulative training seconds at every logged step that has a `step_seconds`."""
    elapsed, previous, times = 0.0, 0, {}
    for entry in sorted((e for e in log_history if "step" in e), key=lambda e: e["step"]):
        if "step_seconds" in entry and entry["step"] > previous:
            elapsed += entry["step_seconds"] * (entry["step"] - previous)
            previous = entry["step"]
            times[entry["step"]] = elapsed
    return times


def series(log_history: list[dict], key: str, tokens_per_step: int | None = None) -> dict[str, list]:
    """x values (steps, tokens, seconds) and y values of `key`, for entries that have them."""
    times = training_time_by_step(log_history)
    points = sorted((e["step"], e[key], e.get("tokens")) for e in log_history if key in e and "step" in e)
    steps = [p[0] for p in points]
    tokens = [p[2] if p[2] is not None else (p[0] * tokens_per_step if tokens_per_step else None) for p in points]
    return {
        "steps": steps,
        "values": [p[1] for p in points],
        "tokens": tokens if all(t is not None for t in tokens) else None,
        "seconds": [times.get(s) for s in steps] if steps and all(s in times for s in steps) else None,
    }


def _savefig_atomically(figure, path: Path) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110, format="png")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a plot is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def plot_metric(log_history: list[dict], key: str, folder, tokens_per_step: int | None = None) -> Path:
    """Write `<folder>/<stem>.png` for `key`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    stem, title = PLOTTED[key]
    data = series(log_history, key, tokens_per_step)
    if not data["values"]:
        figure, axis = plt.subplots(figsize=(13, 1.2))
        axis.axis("off")
        axis.text(
            0.5, 0.5, f"{title}: {NOT_LOGGED_REASON.get(key, f'{key} was not logged')}", ha="center", va="center"
        )
    else:
        figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
        figure.suptitle(title)
        for axis, (x_key, x_label) in zip(axes, X_AXES, strict=True):
            axis.set_xlabel(x_label)
            axis.grid(alpha=0.3)
            if data[x_key] is None:
                axis.text(0.5, 0.5, f"no {x_label} in the logs", ha="center", va="center", transform=axis.transAxes)
            else:
                axis.plot(data[x_key], data["values"], marker="." if len(data["values"]) < 50 else None)
        axes[0].set_ylabel(key)
        figure.tight_layout()
    path = Path(folder) / f"{stem}.png"
    try:
        _savefig_atomically(figure, path)
    finally:
        plt.close(figure)
    return path


def plot_training_curves(log_history: list[dict], folder, tokens_per_step: int | None = None) -> list[Path]:
    return [plot_metric(log_history, key, folder, tokens_per_step) for key in PLOTTED]
