"""What to do with a finished run's levels: linear mode connectivity (``stability``), elastic transfer between
depths (``elastic``), one-shot baseline tickets (``baselines``) and the elastic experiment that compares them
(``experiment``)."""
