"""Model-card templates (Jinja) of tickets and flows, installed as the package data ``lottery_rg.model_cards``.

This folder is their home; setup.cfg maps it into the package (``package_dir``), so a wheel and an editable
install both read them through ``importlib.resources`` (:func:`lottery_rg.io.card_template`).
"""
