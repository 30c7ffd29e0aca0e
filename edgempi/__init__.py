"""edgempi: distributed deep-learning training methods for edge devices, compared on MPI."""

__version__ = "0.1.0"
