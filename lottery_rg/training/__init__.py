"""``LotteryTrainer`` (IMP with rewinding as a ``transformers.Trainer``) and its command-line dataclasses."""
