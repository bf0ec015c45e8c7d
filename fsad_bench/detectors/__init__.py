"""The detector contract and the registry that finds detectors by name."""

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.hparams import (
    BatchSize,
    Degrees,
    Fraction,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
)
from fsad_bench.detectors.registry import available_detectors, load_detector

__all__ = ["BatchSize", "BenchPhase", "Degrees", "Detector", "Fraction", "NonNegFloat", "NonNegInt",
           "PositiveFloat", "PositiveInt", "TrainSet", "TrainShape", "available_detectors", "load_detector"]
