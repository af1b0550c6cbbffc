"""Experiments that branch off a finished run: elastic transfer between depths (``elastic``), one-shot baseline
tickets (``baselines``) and the elastic experiment that retrains and compares them (``experiment``). Linear mode
connectivity, which the trainer runs itself, is :mod:`lottery_rg.stability`."""
