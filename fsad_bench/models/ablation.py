"""DevNet's ablation variants (paper sec. 6.8.1, Table 5) as named methods.

Each class is :class:`~fsad_bench.models.devnet.DevNet` with other defaults for ``variant`` and
``backbone``; everything else (and ``--set``) is DevNet's. What each variant computes, and how we
read the paper where it is silent, is in :mod:`fsad_bench.models.devnet`.

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
module doc of :mod:`fsad_bench.models.devnet` for the evidence either way. AlexNet's trunk needs
inputs of at least 63 px, so with the two scales at least 126 px (checked in ``fit``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fsad_bench.models.backbones import Backbone
from fsad_bench.models.devnet import DevNet, DevNetConfig, Variant


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


class DevNetDS(DevNet):
    """DS: holistic scalar score (pooled features -> linear unit), no top-K MIL."""

    name = "devnet_ds"
    display_name = "DS"
    paper_column = "DS"
    Config = DevNetDSConfig


class DevNetPatchDS(DevNet):
    """Patch-DS: deviation loss on every patch; image score = mean over the patches."""

    name = "devnet_patchds"
    display_name = "Patch-DS"
    paper_column = "Patch-DS"
    Config = DevNetPatchDSConfig


class DevNetAlexNet(DevNet):
    """AlexNet + DS."""

    name = "devnet_alexnet"
    display_name = "AlexNet+DS"
    paper_column = "AlexNet+DS"
    Config = DevNetAlexNetConfig


class DevNetResNet50(DevNet):
    """ResNet-50 + DS."""

    name = "devnet_resnet50"
    display_name = "ResNet-50+DS"
    paper_column = "ResNet-50+DS"
    Config = DevNetResNet50Config

