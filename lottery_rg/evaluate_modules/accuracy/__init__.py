"""An evaluate module: evaluate.load(<this folder>) runs its script accuracy.py (see lottery_rg.tasks.metrics)."""
