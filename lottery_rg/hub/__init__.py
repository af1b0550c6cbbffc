"""Tickets as Hub artifacts: ``LotteryTicket`` (save / load / push) and the model cards of tickets and flows."""
