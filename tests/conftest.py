"""Every test module, in whatever folder, imports the shared helpers of tests/ (helpers.py,
fake data writers) without a package: the folder is put on the path once, here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
