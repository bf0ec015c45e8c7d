"""The methods: DevNet and its ablation variants, Deep SVDD, Deep SAD, FLOS, MINNS, KDAD, and the code
they share (backbones, balanced training, saliency). Each is registered through the
``fsad_bench.detectors`` entry-point group exactly as a third-party plugin is; the core package
``fsad_bench`` imports none of them."""
