"""The stages after training: evaluate (metrics and plots), compare, report, metrics diff and
predict. They load models through pipeline.train.runtime, never the training loop."""
