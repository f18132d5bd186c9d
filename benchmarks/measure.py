"""Measurement helpers shared by the benchmark scripts."""

import threading
import time

import psutil
import torch


class PeakMemory:
    """Peak memory of a block: exact on CUDA, sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.process, self.stop = psutil.Process(), threading.Event()
            self.base = self.process.memory_info().rss
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
