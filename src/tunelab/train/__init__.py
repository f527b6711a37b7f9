"""Training: the stages (train/stages.py is their registry), each one readable file around a TRL trainer, and
the fitting they share (train/fit.py)."""
