"""The tiny CNN: layers with forward and backward passes, an architecture grammar, SGD/Adam, ImageFolder
datasets, a safe model file, training and prediction. Numbers are computed by cnnfilter's own Numba kernels
(im2col, col2im, pooling) and NumPy's matrix products; no deep-learning framework is used."""

from .arch import HELP as ARCH_HELP
from .arch import ArchError, Network, build, default_arch, parse
from .data import DataError, Dataset, load_folder, split
from .graph import Graph, GraphError
from .model import Model, ModelError, ModelSource, load_model, resolve_model, save_model
from .onnxfile import load_onnx, save_onnx, to_onnx
from .plot import plot_curves
from .predict import predict, predict_files
from .train import BatchEvent, EpochEvent, Prepared, Trainer, evaluate, prepare, train

__all__ = [
    "ARCH_HELP", "ArchError", "BatchEvent", "DataError", "Dataset", "EpochEvent", "Graph", "GraphError", "Model",
    "ModelError", "ModelSource", "Network",
    "Prepared", "Trainer", "build", "default_arch", "evaluate", "load_folder", "load_model", "load_onnx", "parse",
    "plot_curves", "predict", "predict_files", "prepare", "resolve_model", "save_model", "save_onnx", "split",
    "to_onnx", "train",
]
