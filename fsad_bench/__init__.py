"""fsad-bench: few-shot image anomaly detection benchmark (DevNet and baselines)."""

__version__ = "0.1.0"
