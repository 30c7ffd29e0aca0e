"""Packaging for edgempi: an MPI benchmark suite for distributed training on edge devices."""
from setuptools import find_packages, setup

setup(
    name="edgempi",
    version="0.1.0",
    description="MPI benchmark suite for distributed deep-learning training on edge devices",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edgempi", "edgempi.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "mpi4py>=3.1",
        "numpy>=1.24",
        "h5py>=3.8",
        "PyYAML>=6.0",
        "tqdm>=4.60",
    ],
    extras_require={
        "mpich": ["mpich"],
        "plot": ["matplotlib>=3.6"],
        # benchmarks/peers: the same workload on Flower's simulation engine (Ray); big, and never needed by edgempi
        "peers": ["flwr[simulation]>=1.42,<2"],
        # benchmarks/peers: the same workload on Apple's pfl-research (it pins packaging<26; edgempi does not care)
        "pfl": ["pfl[pytorch]>=0.6,<0.7"],
        # ruff and mypy: tests/test_lint.py runs them (pinned: a new release may add rules or inferences)
        "test": ["pytest>=7", "pytest-mpi>=0.6", "matplotlib>=3.6", "hypothesis>=6", "ruff>=0.17.6,<0.18",
                 "mypy>=2.4,<2.5", "types-PyYAML", "types-tqdm"],
    },
    entry_points={"console_scripts": ["edgempi=edgempi.cli:main"]},
)
