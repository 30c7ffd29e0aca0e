"""Data sets, their partition across devices, and per-device batch loaders."""
from edgempi.data.loader import Batches, DeviceLoader
from edgempi.data.partition import counts, format_counts, partition, plot_counts
from edgempi.data.settings import DataSettings
from edgempi.data.sources import DataError, Dataset, LoadOptions, from_settings, load

__all__ = ["Batches", "DataError", "DataSettings", "Dataset", "DeviceLoader", "LoadOptions", "counts", "format_counts",
           "from_settings", "load", "partition", "plot_counts"]
