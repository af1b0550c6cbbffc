"""The evaluate modules of the tasks' metrics, shipped and loaded by path (see lottery_rg.tasks.metrics)."""
