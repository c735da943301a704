"""PyTorch backend (eager checkpoints): ``loader`` imports torch, checks the device, sets and restores the thread
count and loads the model; ``runner`` holds :class:`TorchRunner`."""
from pinlite_edge.runtimes.torch.runner import TorchRunner

__all__ = ["TorchRunner"]
