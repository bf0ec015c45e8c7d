"""DevNet's ablation variants (paper sec. 6.8.1, Table 5) as named methods.

Each class is :class:`~fsad_methods.devnet.DevNet` with other defaults for ``variant`` and
``backbone``; everything else (and ``--set``) is DevNet's. What each variant computes, and how we
read the paper where it is silent, is in :mod:`fsad_methods.devnet`.

=================  =====================  ========  =========  ================================
method             Table 5 column         variant   backbone   what changes
=================  =====================  ========  =========  ================================
devnet             MIL-DS (ResNet-18)     mil_ds    resnet18   (the paper's model)
devnet_rep         Rep                    rep       resnet18   no scoring layer; multivariate
                                                               deviation loss on the features
devnet_ds          DS                     ds        resnet18   pooled features -> score, no top-K
devnet_patchds     Patch-DS               patch_ds  resnet18   deviation loss on every patch,
                                                               score = mean over patches
devnet_alexnet     AlexNet + DS           ds        alexnet    DS with AlexNet ``.features``
devnet_resnet50    ResNet-50 + DS         ds        resnet50   DS with ResNet-50
=================  =====================  ========  =========  ================================

The two backbone variants are DS (holistic) by Table 5's header and its empty L_mil row; see the
module doc of :mod:`fsad_methods.devnet` for the evidence either way. AlexNet's trunk needs
inputs of at least 63 px, so with the two scales at least 126 px (checked in ``fit``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fsad_methods.backbones import Backbone
from fsad_methods.devnet import DevNet, DevNetConfig, Variant

# Each variant runs with DevNet's optimisation at every budget (the paper's variants differ only in
# the named module); the backbone variants keep their own backbone.
_PAPER = {"img_size": 448, "weights": "imagenet", "epochs": 50, "steps_per_epoch": 20, "batch_size": 48}
_QUICK = {"img_size": 64, "weights": "none", "epochs": 4, "steps_per_epoch": 10, "batch_size": 16, "lr": 1e-3,
          "lr_step_epochs": 3, "bn_recalibration": True}
_SMOKE = {"img_size": 64, "weights": "none", "epochs": 1, "steps_per_epoch": 2, "batch_size": 8}
#: the ResNet-18 variants at the CPU budgets: the narrow ResNet-18; two scales need 64 px (the half-size
#: scale must reach the ResNet's stride, 32 px)
_RESNET18_BUDGETS = {"paper": _PAPER, "quick": {**_QUICK, "backbone": "resnet18_w16"},
                     "smoke": {**_SMOKE, "backbone": "resnet18_w16"}}


@dataclass
class DevNetRepConfig(DevNetConfig):
    variant: Variant = "rep"


@dataclass
class DevNetDSConfig(DevNetConfig):
    variant: Variant = "ds"


@dataclass
class DevNetPatchDSConfig(DevNetConfig):
    variant: Variant = "patch_ds"


@dataclass
class DevNetAlexNetConfig(DevNetConfig):
    backbone: Backbone = "alexnet"
    variant: Variant = "ds"


@dataclass
class DevNetResNet50Config(DevNetConfig):
    backbone: Backbone = "resnet50"
    variant: Variant = "ds"


class DevNetRep(DevNet):
    """Rep: deviation loss on the representation, multivariate Gaussian reference, no scoring layer."""

    name = "devnet_rep"
    display_name = "Rep"
    paper_column = "Rep"
    Config = DevNetRepConfig
    budgets = _RESNET18_BUDGETS


class DevNetDS(DevNet):
    """DS: holistic scalar score (pooled features -> linear unit), no top-K MIL."""

    name = "devnet_ds"
    display_name = "DS"
    paper_column = "DS"
    Config = DevNetDSConfig
    budgets = _RESNET18_BUDGETS


class DevNetPatchDS(DevNet):
    """Patch-DS: deviation loss on every patch; image score = mean over the patches."""

    name = "devnet_patchds"
    display_name = "Patch-DS"
    paper_column = "Patch-DS"
    Config = DevNetPatchDSConfig
    budgets = _RESNET18_BUDGETS


class DevNetAlexNet(DevNet):
    """AlexNet + DS."""

    name = "devnet_alexnet"
    display_name = "AlexNet+DS"
    paper_column = "AlexNet+DS"
    Config = DevNetAlexNetConfig
    # AlexNet's features need >= 63 px per scale: 128 px with two scales
    budgets = {"paper": _PAPER, "quick": {**_QUICK, "img_size": 128}, "smoke": {**_SMOKE, "img_size": 128}}


class DevNetResNet50(DevNet):
    """ResNet-50 + DS."""

    name = "devnet_resnet50"
    display_name = "ResNet-50+DS"
    paper_column = "ResNet-50+DS"
    Config = DevNetResNet50Config
    # the full ResNet-50 (its point), so fewer steps to stay CPU-sized
    budgets = {"paper": _PAPER, "quick": {**_QUICK, "epochs": 2}, "smoke": _SMOKE}

