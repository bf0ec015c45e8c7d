"""The detector contract and the registry that finds detectors by name."""

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.registry import available_detectors, load_detector

__all__ = ["BenchPhase", "Detector", "TrainSet", "TrainShape", "available_detectors", "load_detector"]
