"""Adam whose update of each weight is one fused kernel on TensorFlow.

Keras's Adam writes the update as ~10 element-wise ops (g - m, * (1 - β1), assign_add, g², ...),
each a full pass over the weight: for the `seed` model's 34 M-weight Dense the optimizer is memory
bound. TensorFlow's `ResourceApplyAdam` does the same arithmetic in one pass (read var, m, v, grad;
write var, m, v); the README's Performance section has the measured gain. Same slots, same
formula, same checkpoints as `keras.optimizers.Adam`.

Under JAX the whole train step is one XLA program, which fuses the element-wise ops itself, so
there this class is plain Keras Adam.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lfw_vae")
class FusedAdam(keras.optimizers.Adam):
    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        # var -= lr·sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε), after the usual m and v updates
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=ops.power(ops.cast(self.beta_1, dtype), step),
            beta2_power=ops.power(ops.cast(self.beta_2, dtype), step),
            lr=ops.cast(learning_rate, dtype),
            beta1=ops.cast(self.beta_1, dtype),
            beta2=ops.cast(self.beta_2, dtype),
            epsilon=ops.cast(self.epsilon, dtype),
            grad=ops.cast(gradient, dtype),
            use_locking=False,
        )
        return None
