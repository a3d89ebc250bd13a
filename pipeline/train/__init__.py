"""The train stage: the training loop, exact resume, the architectures (models/), and the Keras
runtime that evaluation and prediction share with training."""
