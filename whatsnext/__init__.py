"""WhatsNext: a job queue for experiments and pipelines on machines you don't control."""

__version__ = "0.1.0"
