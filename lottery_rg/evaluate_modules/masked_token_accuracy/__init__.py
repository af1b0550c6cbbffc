"""An evaluate module: evaluate.load(<this folder>) runs its script masked_token_accuracy.py (see lottery_rg.tasks.metrics)."""
