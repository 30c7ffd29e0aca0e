"""Small helpers the pipeline and the analysis share, none of them a stage of a run: torch
imported on first use (``lazy``) and its optimizers without the compiler's import (``optim``),
work buffers kept between steps (``scratch``), a file reader under a deadline (``guard``), YAML
read with limits (``yamltext``), and the words and lines a run reports in (``units``,
``progress``)."""
