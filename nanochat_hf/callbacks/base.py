"""The shared mechanics of callbacks that add metrics to the Trainer's logs.

`Trainer.log(logs)` appends a copy of `logs` to `state.log_history` and then calls every callback's
`on_log` with the same dict, in list order. The Trainer puts its printer and the `report_to`
integrations (TensorBoard, W&B, trackio) *before* callbacks passed as `callbacks=[...]`, so keys added
by a late `on_log` would reach neither. `add_metric_callbacks(trainer, ...)` therefore inserts ours at
the front of the list; each also copies what it adds into the matching `log_history` entry, so
`trainer_state.json` holds the metrics however the callbacks were added.

Metrics computed outside a logging step (a validation pass at step 250 when logging_steps is 10 does
coincide, one every 7 steps would not) are kept until the next log, and the callback asks for a log at
that step (`control.should_log = True`) so they are written with the step they belong to.
"""

from transformers import TrainerCallback


class MetricsCallback(TrainerCallback):
    """A callback whose metrics join the Trainer's next `on_log` (subclasses call `publish`)."""

    def __init__(self):
        self._pending: dict = {}

    def publish(self, metrics: dict, control=None) -> None:
        """Queue `metrics` for the next log; with `control`, make that log happen at this step."""
        self._pending.update(metrics)
        if control is not None:
            control.should_log = True

    def metrics_for_log(self, args, state) -> dict:
        """Metrics computed at log time (subclasses); queued ones are added to them."""
        return {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        extra = {**self.metrics_for_log(args, state), **self._pending}
        self._pending = {}
        if not extra:
            return
        logs.update(extra)
        # Trainer.log appended {**logs, "step": global_step} just before calling on_log.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)


def add_metric_callbacks(trainer, *callbacks) -> None:
    """Add callbacks *ahead of* the printer and reporting integrations, keeping their given order.

    A callback with a `trainer_callbacks` attribute (the samples, which report a table to the
    integrations themselves) gets the Trainer's live callback list there.
    """
    for position, callback in enumerate(callbacks):
        trainer.callback_handler.callbacks.insert(position, callback)
        if hasattr(callback, "trainer_callbacks"):
            callback.trainer_callbacks = trainer.callback_handler.callbacks
