"""Data sets, their partition across devices, and per-device batch loaders."""
from edgempi.data.loader import ConcatLoader, DeviceLoader
from edgempi.data.partition import counts, partition
from edgempi.data.sources import Dataset, DataError, load

__all__ = ["ConcatLoader", "DataError", "Dataset", "DeviceLoader", "counts", "load", "partition"]
