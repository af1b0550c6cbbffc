"""Masks and magnitude pruning (``masks``), the typed lottery settings (``settings``), and keeping pruned
weights at zero while training (``callbacks``)."""
