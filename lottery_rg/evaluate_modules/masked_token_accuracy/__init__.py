"""An evaluate module: evaluate.load(<this folder>) runs the script named like the folder."""
