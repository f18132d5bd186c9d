"""`report_to` checked before a run builds anything: every named reporter's package must be installed.

The Trainer creates its reporting callbacks (TensorBoard, W&B, trackio, ...) when it is built, after the
tokenizer, data and model, so a missing package used to fail a run only after its set-up. `check_reporters`
runs at the start of every stage, dry runs included, and names the package to install.
"""

from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

from ..errors import UserInputError


# What to install for a reporter (the extras of this package where there is one).
INSTALL_HINTS = {
    "tensorboard": "pip install 'nanochat-hf[tensorboard]' (or tensorboard)",
    "wandb": "pip install wandb",
    "trackio": "pip install trackio",
}


def check_reporters(report_to) -> None:
    """Raise a `UserInputError` for a `report_to` entry that is unknown or whose package is missing."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [name for name in names if name not in ("none", "all")]  # "all" means the installed ones
    if not names:
        return
    available = set(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UserInputError(
                f"--report_to {name}: not a reporting integration; expected none, all or one of "
                f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}"
            )
        if name not in available:
            hint = INSTALL_HINTS.get(name, f"install the {name} package")
            raise UserInputError(f"--report_to {name}: its package is not installed; {hint}, or set report_to: none")
