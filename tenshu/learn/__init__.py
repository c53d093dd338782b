"""The learning side of tenshu: training from scratch (tiny.py), and later fine-tuning from feedback."""
