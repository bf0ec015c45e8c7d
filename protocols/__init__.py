"""Packaged protocol specs (TOML); see fsad_bench.protocol."""
