"""Datasets: the canonical (MVTec AD) layout loader, the decoded-image cache, the dataset registry."""
