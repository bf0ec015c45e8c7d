"""DevNet (the paper's model), its building blocks, and the training pipeline shared with baselines."""
