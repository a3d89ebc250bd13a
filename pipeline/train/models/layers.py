"""Layers Keras lacks. Imported only by code that already needs Keras (builders, model loading),
and registered so a saved model that uses them loads anywhere `pipeline.train.loop.keras_seeded` ran."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="pipeline")
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet's LRN across channels: x / (bias + alpha * sum of x^2 over 2*radius+1 channels)^beta.

    Defaults are the paper's (k=2, n=5, alpha=1e-4, beta=0.75), in tf.nn.local_response_normalization's
    terms (alpha multiplies the plain sum, as in the paper).
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, x):
        import tensorflow as tf

        return tf.nn.local_response_normalization(
            x, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
