"""Data sets, their partition across devices, and per-device batch loaders."""
from edgempi.data.loader import DeviceLoader
from edgempi.data.partition import counts, format_counts, partition, plot_counts
from edgempi.data.sources import DataError, Dataset, LoadOptions, load

__all__ = ["DataError", "Dataset", "DeviceLoader", "LoadOptions", "counts", "format_counts", "load", "partition",
           "plot_counts"]
