"""Energy used by the GPUs so far, and what it cost.

Where the watts come from, best first:

1. NVML (`pynvml`, from the `nvidia-ml-py` package) on a CUDA machine: the driver's energy counter
   (millijoules since the driver loaded; Volta and newer), or, where that is missing, the power
   reading sampled at every step and integrated over time.
2. The GPU table's board power (`nanochat_hf/planning/gpus.csv`) x wall-clock time, for the card named
   by `gpu=` or detected by name. Training at full tilt runs a card at or near its power limit, so this is
   an upper-bound estimate.
3. `power_watts=` given explicitly (e.g. a whole-PC figure measured at the wall), x wall-clock time.

Nothing is logged when none applies (a CPU run without `gpu=`/`power_watts=`). Each process measures
its own device and the total is that x the number of processes (identical devices doing identical
work). Logged: `energy_kwh` and, with `price_per_kwh`, `energy_cost_<currency>` (e.g.
`energy_cost_usd`). A resumed run continues from the last `energy_kwh` in the restored log history.
"""

import logging
import time

import torch

from nanochat_hf.callbacks.base import MetricsCallback
from nanochat_hf.planning.gpus import resolve_gpu


logger = logging.getLogger(__name__)

JOULES_PER_KWH = 3.6e6


class _NvmlMeter:
    """Joules used by the current CUDA device since `start()`, read through NVML."""

    def __init__(self, pynvml, handle):
        self.nvml, self.handle = pynvml, handle
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.has_counter = True
        except self.nvml.NVMLError:
            self.has_counter = False
        self.source = "NVML energy counter" if self.has_counter else "NVML power readings"

    @classmethod
    def open(cls):
        if not torch.cuda.is_available():
            return None
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            index = torch.cuda.current_device()
            uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
            handle = None
            if uuid:  # NVML's numbering ignores CUDA_VISIBLE_DEVICES; the UUID does not
                for candidate in (uuid, f"GPU-{uuid}"):
                    try:
                        handle = pynvml.nvmlDeviceGetHandleByUUID(candidate)
                        break
                    except pynvml.NVMLError:
                        continue
            if handle is None:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return cls(pynvml, handle)
        except pynvml.NVMLError as err:
            logger.info("energy: NVML unavailable (%s); falling back to the GPU table", err)
            return None

    def _watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # milliwatts

    def start(self) -> None:
        self.joules = 0.0
        self._time = time.perf_counter()
        if self.has_counter:
            self._counter_start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        else:
            self._last_watts = self._watts()

    def sample(self) -> None:
        if self.has_counter:
            self.joules = (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self._counter_start) / 1000.0
            return
        now, watts = time.perf_counter(), self._watts()
        self.joules += 0.5 * (watts + self._last_watts) * (now - self._time)  # trapezoid rule
        self._time, self._last_watts = now, watts


class _ConstantPowerMeter:
    """A fixed number of watts x wall-clock time."""

    def __init__(self, watts: float, source: str):
        self.watts, self.source = float(watts), source

    def start(self) -> None:
        self._start = time.perf_counter()
        self.joules = 0.0

    def sample(self) -> None:
        self.joules = self.watts * (time.perf_counter() - self._start)


class EnergyCallback(MetricsCallback):
    """Logs `energy_kwh` (all processes' devices) and `energy_cost_<currency>` when a price is given.

    Args:
        price_per_kwh: electricity price per kWh (e.g. 0.30), in `currency`.
        currency: a short currency code used in the metric name ("USD" -> `energy_cost_usd`).
        gpu: key or name of the card in the GPU table (e.g. "rtx4070") when it cannot be detected; its
            board power is used if NVML is not available.
        power_watts: watts per device to assume instead of any measurement (e.g. a wall-socket reading).
        use_nvml: read the driver's counters when possible (default True).
    """

    def __init__(self, price_per_kwh=None, currency="USD", gpu=None, power_watts=None, use_nvml=True):
        super().__init__()
        self.price_per_kwh = price_per_kwh
        self.currency = currency
        self.gpu = gpu
        self.power_watts = power_watts
        self.use_nvml = use_nvml
        self.meter = None

    def _open_meter(self):
        if self.power_watts is not None:
            return _ConstantPowerMeter(self.power_watts, f"{self.power_watts} W (given)")
        if self.use_nvml:
            meter = _NvmlMeter.open()
            if meter is not None:
                return meter
        gpu = resolve_gpu(self.gpu)
        if gpu is not None and gpu.board_power_w is not None:
            return _ConstantPowerMeter(gpu.board_power_w, f"board power of {gpu.name} ({gpu.board_power_w:g} W)")
        return None

    def on_train_begin(self, args, state, control, **kwargs):
        self.meter = self._open_meter()
        self.num_devices = args.world_size
        # A resumed run carries on from the energy logged before the checkpoint.
        self.kwh_before = next(
            (entry["energy_kwh"] for entry in reversed(state.log_history) if "energy_kwh" in entry), 0.0
        )
        if self.meter is None:
            if state.is_world_process_zero:
                logger.info("energy: n/a (no NVML and no power figure for this device; pass gpu= or power_watts=)")
            return
        if state.is_world_process_zero:
            logger.info("energy: measuring with %s x %d device(s)", self.meter.source, self.num_devices)
        self.meter.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.meter is not None:
            self.meter.sample()

    @property
    def energy_kwh(self) -> float:
        """Energy of all devices since the start of training (including before a resume), in kWh."""
        if self.meter is None:
            return self.kwh_before
        return self.kwh_before + self.meter.joules * self.num_devices / JOULES_PER_KWH

    def metrics_for_log(self, args, state) -> dict:
        if self.meter is None:
            return {}
        self.meter.sample()
        metrics = {"energy_kwh": self.energy_kwh}
        if self.price_per_kwh is not None:
            metrics[f"energy_cost_{self.currency.lower()}"] = self.energy_kwh * self.price_per_kwh
        return metrics
